"""Any model of keras.applications: ``featurize run --model`` gives what
the model's own Keras ``predict`` gives on the same pixels.

Each model gets an official-format weight file made here (the ImageNet
files cannot be downloaded); the reference is built by Keras's own
constructor from that file, with its family's own ``preprocess_input``.
"""
import importlib
import json
import os

import numpy as np
import pytest

from tests.support import datasets
from tests.support.outputs import featurize, read_outputs
from tests.support.weights import write_model_weights
from transforms.decode import imaging
from transforms.extract import models

# (model, its input size, its family's module, the input formats read)
CASES = [
    ('vgg19', 224, 'vgg19', ('files',)),
    ('resnet50', 224, 'resnet', ('tfrecord', 'webdataset', 'files')),
    ('inceptionv3', 299, 'inception_v3', ('files',)),
    ('efficientnetb0', 224, 'efficientnet', ('files',)),
    ('convnexttiny', 224, 'convnext', ('files',)),
    ('mobilenetv3small', 224, 'mobilenet_v3', ('files',)),
]


def reference(model: str, weights: str, size: int, family: str,
              images) -> dict:
  """The model's features per key, as Keras alone computes them: its
  constructor loading ``weights``, cut at its convolutional base's output,
  its family's ``preprocess_input``."""
  import keras
  named = models.catalog.find(model)
  base = getattr(keras.applications, named.keras_name)(
      include_top=False, weights=weights, input_shape=(size, size, 3))
  decode = imaging.DecodeConfig(image_size=size,
                                resize_shorter=imaging.shorter_side(size))
  keys = sorted(images)
  pixels = np.stack([imaging.decode_image(images[k], decode) for k in keys])
  module = importlib.import_module(f'keras.applications.{family}')
  x = module.preprocess_input(pixels.astype(np.float32))
  return dict(zip(keys, base.predict(x, batch_size=4, verbose=0)))


@pytest.mark.parametrize('model, size, family, formats', CASES,
                         ids=[case[0] for case in CASES])
def test_features_match_the_models_own_predict(tmp_path, model, size, family,
                                               formats):
  named = models.catalog.find(model)
  weights = write_model_weights(
      str(tmp_path / named.weights_file_notop), model)
  ds = datasets.write_dataset(str(tmp_path / 'input'), formats, bad=False)
  out = str(tmp_path / 'out')
  assert featurize('--input', str(tmp_path / 'input' / '**'), '--output',
                   out, '--model', named.keras_name.upper(), '--weights',
                   weights, '--batch-size', '4') == 0
  records = read_outputs(out)
  assert set(records) == set(ds.images)
  expected = reference(model, weights, size, family, ds.images)
  for key, (features, _) in records.items():
    want = expected[key]
    assert features.shape == want.shape == named_shape(model, size)
    # Within 1e-4 of the reference's largest value (float32 throughout).
    assert np.abs(features - want).max() <= 1e-4 * np.abs(want).max(), key
  manifest = json.load(open(os.path.join(out, 'manifest.json')))
  assert manifest['model'] == named.keras_name
  assert manifest['layer'] == named.feature_layer
  assert manifest['image_size'] == size
  assert manifest['preprocessing']['image_size'] == size
  assert manifest['preprocessing']['resize_shorter'] == round(size * 256 / 224)
  assert manifest['preprocessing']['model_preprocessing'] == (
      f'keras.applications.{family}.preprocess_input')


def named_shape(model: str, size: int) -> tuple:
  config = models.resolve(models.ModelConfig(model=model, image_size=size))
  return models.feature_shape(config)


# The TF-free reader in a process of its own (the ``tfrecord`` package
# cannot share one with TensorFlow, which this module's runs load).
_READ_BACK = """
import json, sys
from pipeline import read_features
print(json.dumps({r.key: {k: list(v.shape) for k, v in r.features.items()}
                  for r in read_features.iter_features(sys.argv[1])}))
"""


def test_inspect_plot_and_the_tf_free_reader_know_another_model(tmp_path):
  """A MobileNetV3Small run of two of its own layers: ``featurize inspect``
  names the model and its layers, ``--plot`` draws the deepest layer, and
  ``read_features`` gives each layer at the model's shapes."""
  layers = 'expanded_conv_project_bn,conv_1_bn'
  ds = datasets.write_dataset(str(tmp_path / 'input'), ('files',), bad=False)
  out = str(tmp_path / 'out')
  assert featurize('--input', str(tmp_path / 'input' / '**'), '--output',
                   out, '--model', 'mobilenetv3small', '--weights', 'random',
                   '--layer', layers, '--pooling', 'none,avg',
                   '--batch-size', '4') == 0
  shapes = models.feature_shapes(models.resolve(models.ModelConfig(
      model='mobilenetv3small', layer=layers, pooling='none,avg')))
  assert shapes['conv_1_bn'] == (576,)
  result = _subprocess('-c', _READ_BACK, out)
  assert json.loads(result.stdout) == {
      key: {layer: list(shape) for layer, shape in shapes.items()}
      for key in ds.images}
  result = _subprocess('-m', 'pipeline.cli', 'inspect', out, '--plot',
                       str(tmp_path / 'plot.png'))
  assert ('MobileNetV3Small expanded_conv_project_bn,conv_1_bn'
          in result.stdout), result.stdout
  assert f'PCA of {len(ds.images)} features' in result.stdout
  assert os.path.getsize(tmp_path / 'plot.png') > 0


def _subprocess(*args: str):
  import subprocess
  import sys
  from tests.support.paths import ROOT
  result = subprocess.run([sys.executable, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  return result
