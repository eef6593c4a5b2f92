"""``--model FILE.keras``: a user's own model, its own layer names, its
input size from the file, refused at launch when featurize cannot run
it."""
import json
import os
import zipfile

import numpy as np
import pytest

from tests.support import datasets
from tests.support.outputs import featurize, read_outputs
from transforms.decode import imaging


def _save(path, model, preprocess=None):
  model.save(path)
  if preprocess:
    with zipfile.ZipFile(path, 'a') as archive:
      archive.writestr('featurize.json',
                       json.dumps({'preprocess': preprocess}))
  return str(path)


def small_model(side=96, name='mine'):
  """A functional model with its own layer names, and a residual join."""
  import keras
  pixels = keras.Input((side, side, 3), name='pixels')
  stem = keras.layers.Conv2D(8, 3, padding='same', activation='relu',
                             name='stem')(pixels)
  branch = keras.layers.Conv2D(8, 3, padding='same', name='branch')(stem)
  joined = keras.layers.Add(name='joined')([stem, branch])
  pooled = keras.layers.MaxPooling2D(name='shrink')(joined)
  body = keras.layers.Conv2D(16, 3, activation='relu', name='body')(pooled)
  normal = keras.layers.BatchNormalization(name='norm')(body)
  embedding = keras.layers.GlobalAveragePooling2D(name='embedding')(normal)
  model = keras.Model(pixels, embedding, name=name)
  rng = np.random.default_rng(3)
  model.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.2
                     + (1.0 if w.ndim == 1 and i % 2 else 0.0)
                     for i, w in enumerate(model.get_weights())])
  return model


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  root = tmp_path_factory.mktemp('photos')
  ds = datasets.write_dataset(str(root), ('files',), bad=False)
  return str(root / '**'), ds


def _reference(model, images, side, layer=None):
  import keras
  from keras.applications import imagenet_utils
  if layer:
    model = keras.Model(model.input, model.get_layer(layer).output)
  decode = imaging.DecodeConfig(image_size=side,
                                resize_shorter=imaging.shorter_side(side))
  keys = sorted(images)
  pixels = np.stack([imaging.decode_image(images[k], decode)
                     for k in keys]).astype(np.float32)
  x = imagenet_utils.preprocess_input(pixels, mode='tf')
  return dict(zip(keys, model.predict(x, verbose=0)))


def _close(records, expected):
  assert set(records) == set(expected)
  for key, (features, _) in records.items():
    want = expected[key]
    assert features.shape == want.shape
    assert np.abs(features - want).max() <= 1e-4 * np.abs(want).max(), key


def test_a_model_file_gives_what_keras_gives_by_its_own_layer_names(
    tmp_path, photos):
  pattern, ds = photos
  model = small_model()
  path = _save(tmp_path / 'mine.keras', model)
  out = str(tmp_path / 'out')
  assert featurize('--input', pattern, '--output', out, '--model', path,
                   '--preprocess', 'tf', '--batch-size', '4') == 0
  _close(read_outputs(out), _reference(model, ds.images, 96))
  manifest = json.load(open(os.path.join(out, 'manifest.json')))
  assert manifest['model'] == 'mine.keras'
  assert manifest['layer'] == 'embedding'  # the model's own output
  assert manifest['image_size'] == 96  # from the file's input shape
  assert manifest['model_file']['sha256'] == __import__('hashlib').sha256(
      open(path, 'rb').read()).hexdigest()
  assert manifest['preprocessing']['model_preprocessing'].endswith('mode tf')

  # A layer inside, by the file's name: the model is cut there.
  inner = str(tmp_path / 'inner')
  assert featurize('--input', pattern, '--output', inner, '--model', path,
                   '--preprocess', 'tf', '--layer', 'joined', '--pooling',
                   'max') == 0
  expected = _reference(model, ds.images, 96, 'joined')
  _close(read_outputs(inner), {k: v.max(axis=(0, 1))
                               for k, v in expected.items()})


def test_an_open_size_model_takes_image_size_and_a_recorded_preprocess(
    tmp_path, photos):
  import keras
  pattern, ds = photos
  fixed = small_model()
  open_model = keras.models.clone_model(  # the same layers, input open
      fixed, input_tensors=keras.Input((None, None, 3)))
  open_model.set_weights(fixed.get_weights())
  path = _save(tmp_path / 'open.keras', open_model, preprocess='tf')
  out = str(tmp_path / 'out')
  assert featurize('--input', pattern, '--output', out, '--model', path,
                   '--image-size', '64', '--batch-size', '4') == 0
  _close(read_outputs(out), _reference(fixed_at(fixed, 64), ds.images, 64))


def fixed_at(model, side):
  import keras
  rebuilt = keras.models.clone_model(
      model, input_tensors=keras.Input((side, side, 3)))
  rebuilt.set_weights(model.get_weights())
  return rebuilt


def _custom_layer_model():
  import keras

  class Doubles(keras.layers.Layer):
    def call(self, x):
      return x * 2

  pixels = keras.Input((64, 64, 3))
  return keras.Model(pixels, keras.layers.GlobalAveragePooling2D()(
      Doubles(name='doubles')(pixels)))


def _two_inputs_model():
  import keras
  a, b = keras.Input((64, 64, 3)), keras.Input((64, 64, 3))
  return keras.Model([a, b], keras.layers.Add()([a, b]))


def _not_an_image_model():
  import keras
  vector = keras.Input((10,))
  return keras.Model(vector, keras.layers.Dense(4)(vector))


@pytest.mark.parametrize('make, flags, message', [
    (_custom_layer_model, ['--preprocess', 'none'],
     "its layer class 'Doubles' is custom"),
    (_two_inputs_model, ['--preprocess', 'none'], 'has 2 inputs'),
    (_not_an_image_model, ['--preprocess', 'none'], 'is not an RGB image'),
    (small_model, [], 'needs --preprocess'),
    (small_model, ['--preprocess', 'tf', '--image-size', '128'],
     'takes 96x96 input'),
    (small_model, ['--preprocess', 'tf', '--layer', 'bdy'],
     "has no layer 'bdy' (did you mean body?)"),
    (small_model, ['--preprocess', 'tf', '--weights', 'random'],
     'holds its own weights'),
], ids=['custom-layer', 'two-inputs', 'not-an-image', 'no-preprocess',
        'other-size', 'unknown-layer', 'weights'])
def test_a_model_file_featurize_cannot_run_is_refused_at_launch(
    tmp_path, photos, capsys, make, flags, message):
  path = _save(tmp_path / 'model.keras', make())
  out = tmp_path / 'out'
  assert featurize('--input', photos[0], '--output', str(out), '--model',
                   path, *flags) == 2
  err = capsys.readouterr().err
  assert message in err, err
  assert err.count('\n') <= 2  # one line, no traceback
  assert not out.exists()  # refused before anything was read or written


def test_a_file_that_is_not_a_keras_archive_is_refused(tmp_path, photos,
                                                       capsys):
  path = tmp_path / 'weights.keras'
  path.write_bytes(b'\x89HDF\r\n\x1a\n not a zip')
  assert featurize('--input', photos[0], '--output', str(tmp_path / 'out'),
                   '--model', str(path), '--preprocess', 'tf') == 2
  assert 'not a Keras .keras model file' in capsys.readouterr().err


def test_a_model_file_runs_in_bfloat16(tmp_path, photos):
  """A file records float32 layers; --precision bfloat16 rebuilds them
  under Keras's mixed policy, so the run really computes in bfloat16."""
  pattern, ds = photos
  model = small_model()
  path = _save(tmp_path / 'mine.keras', model, preprocess='tf')
  out = str(tmp_path / 'out')
  assert featurize('--input', pattern, '--output', out, '--model', path,
                   '--precision', 'bfloat16') == 0
  expected = _reference(model, ds.images, 96)
  for key, (features, _) in read_outputs(out).items():
    want = expected[key]
    cosine = features @ want / np.linalg.norm(features) / np.linalg.norm(want)
    assert cosine > 0.99, key
    assert not np.allclose(features, want, rtol=1e-5, atol=0)
