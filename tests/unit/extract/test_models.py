"""Model building, weight loading and batch sizing (no Beam)."""
import dataclasses

import numpy as np
import pytest

from tests.support import image_zoo
from transforms.decode import imaging
from transforms.extract import models


def _inputs(names=('chelsea', 'coffee')):
  config = imaging.DecodeConfig()
  return models.to_model_input([
      imaging.decode_image(image_zoo.png(n), config) for n in names], 'caffe')


def test_official_weight_file_loads_like_keras_does(notop_weights):
  import keras
  ours = models.build_feature_model(models.ModelConfig(weights=notop_weights))
  reference = keras.applications.VGG16(include_top=False,
                                       weights=notop_weights)
  x = _inputs()
  np.testing.assert_allclose(ours.predict_on_batch(x),
                             reference.predict_on_batch(x), rtol=1e-5,
                             atol=1e-5)


def test_caffe_preprocessing_is_vgg16s_own():
  pixels = np.zeros((1, 224, 224, 3), np.uint8)
  pixels[..., 0] = 255  # pure red
  x = models.to_model_input(list(pixels), 'caffe')
  # caffe mode: RGB -> BGR, minus the ImageNet channel means.
  np.testing.assert_allclose(x[0, 0, 0], [-103.939, -116.779, 255 - 123.68],
                             rtol=1e-6)


def test_notop_file_cannot_serve_a_top_layer(notop_weights):
  with pytest.raises(ValueError, match='does not fit'):
    models.build_feature_model(
        models.ModelConfig(weights=notop_weights, layer='fc2'))


def test_missing_or_changed_weight_file_is_a_clear_error(notop_weights):
  with pytest.raises(FileNotFoundError, match='weight file not found'):
    models.build_feature_model(models.ModelConfig(weights='/no/such.h5'))
  with pytest.raises(ValueError, match='sha256'):
    models.build_feature_model(models.ModelConfig(weights=notop_weights,
                                                weights_sha256='0' * 64))


def test_imagenet_failure_says_which_file_to_place_where(tmp_path,
                                                         monkeypatch):
  monkeypatch.setenv('KERAS_HOME', str(tmp_path))
  with pytest.raises(RuntimeError) as raised:
    models.build_feature_model(models.ModelConfig(weights='imagenet'))
  message = str(raised.value)
  name = models.NAMED_MODELS['vgg16'].weights_file_notop
  assert name in message
  assert str(tmp_path / 'models' / name) in message


def test_random_weights_are_identical_across_builds():
  config = models.ModelConfig(weights='random', layer='block3_pool',
                             pooling='avg')
  x = _inputs()
  first = models.build_feature_model(config).predict_on_batch(x)
  second = models.build_feature_model(config).predict_on_batch(x)
  np.testing.assert_array_equal(first, second)
  other = models.build_feature_model(dataclasses.replace(config, seed=1))
  assert not np.allclose(first, other.predict_on_batch(x))


@pytest.mark.parametrize('layer, pooling', [
    ('block1_pool', 'none'), ('block3_conv2', 'max'), ('block5_pool', 'none'),
    ('block5_pool', 'avg'), ('block4_conv3', 'none')])
def test_feature_shape_matches_the_model(layer, pooling):
  config = models.ModelConfig(weights='random', layer=layer, pooling=pooling)
  model = models.build_feature_model(config)
  assert tuple(model.output.shape[1:]) == models.feature_shape(config)


def test_top_layers_build_with_the_full_model():
  config = models.ModelConfig(weights='random', layer='fc2')
  model = models.build_feature_model(config)
  assert model.predict_on_batch(_inputs(('rocket',))).shape == (1, 4096)
  assert models.feature_shape(config) == (4096,)


def test_bfloat16_features_are_close_to_float32(notop_weights):
  x = _inputs(('chelsea', 'coffee', 'astronaut'))
  config = models.ModelConfig(weights=notop_weights, pooling='avg')
  f32 = models.build_feature_model(config).predict_on_batch(x)
  bf16 = models.build_feature_model(
      dataclasses.replace(config, precision='bfloat16')).predict_on_batch(x)
  bf16 = np.asarray(bf16, np.float32)
  cosine = (f32 * bf16).sum(1) / np.linalg.norm(f32, axis=1) / np.linalg.norm(
      bf16, axis=1)
  assert (cosine > 0.99).all(), cosine
  assert not np.array_equal(f32, bf16)  # it really ran in bfloat16


def test_batch_size_is_bounded_by_bytes():
  config = models.ModelConfig(batch_size=64, max_batch_bytes=100 << 20)
  # 2 x 224 x 224 x 64 x 4 bytes = 25.7 MB per image in float32.
  assert models.effective_batch_size(config) == 4
  bf16 = dataclasses.replace(config, precision='bfloat16')
  assert models.effective_batch_size(bf16) == 8
  assert models.effective_batch_size(
      dataclasses.replace(config, max_batch_bytes=1)) == 1
  assert models.effective_batch_size(models.ModelConfig(batch_size=16)) == 16


def test_config_rejects_pooling_on_dense_layers():
  with pytest.raises(ValueError, match='spatial'):
    models.resolve(models.ModelConfig(layer='fc1', pooling='avg'))
  with pytest.raises(ValueError, match="unknown VGG16 layer 'block9_pool'"):
    models.resolve(models.ModelConfig(layer='block9_pool'))


def test_several_layers_are_kept_in_the_models_order_with_one_pooling_each():
  config = models.resolve(models.ModelConfig(
      layer='block5_pool, block3_pool,block4_pool', pooling='avg'))
  assert config.layers == ('block3_pool', 'block4_pool', 'block5_pool')
  assert config.poolings == ('avg', 'avg', 'avg')
  assert config.layer == 'block3_pool,block4_pool,block5_pool'
  assert config.multi_layer and not models.ModelConfig().multi_layer
  # The canonical strings (what the manifest and a refresh's fingerprint
  # read) do not depend on how the same set was written.
  same = models.resolve(models.ModelConfig(
      layer='block3_pool,block4_pool,block5_pool', pooling='avg,avg,avg'))
  assert (same.layer, same.pooling) == (config.layer, config.pooling)
  mixed = models.resolve(models.ModelConfig(
      layer='block5_pool,block1_pool', pooling='avg,none'))
  assert mixed.layers == ('block1_pool', 'block5_pool')
  assert mixed.poolings == ('none', 'avg') and mixed.pooling == 'none,avg'
  assert models.feature_shapes(mixed) == {'block1_pool': (112, 112, 64),
                                         'block5_pool': (512,)}
  with pytest.raises(ValueError, match='several layers'):
    models.feature_shape(mixed)


@pytest.mark.parametrize('layer, pooling, message', [
    ('block3_pool,block3_pool', 'none', 'twice'),
    ('block3_pool,block4_pool', 'avg,none,max', 'one per layer'),
    ('block5_pool,fc2', 'avg', 'spatial'),
    ('block5_pool,block9_pool', 'none', 'unknown'),
    ('block5_pool', 'avg,none', 'one per layer')])
def test_several_layers_refuse_what_does_not_fit(layer, pooling, message):
  with pytest.raises(ValueError, match=message):
    models.resolve(models.ModelConfig(layer=layer, pooling=pooling))


def test_one_pass_gives_each_layer_as_its_own_run_does():
  """Each output of a model of several layers equals the single-layer
  model's (within 1e-5), and the model stops at the deepest one."""
  x = _inputs()
  config = models.ModelConfig(weights='random', layer='block2_pool,block4_pool',
                             pooling='none,avg')
  model = models.build_feature_model(config)
  names = {layer.name for layer in model.layers}
  assert 'block4_pool' in names and 'block5_conv1' not in names
  outputs = model.predict_on_batch(x)
  assert len(outputs) == 2
  for got, layer, pooling in zip(outputs, config.layers, config.poolings):
    alone = models.build_feature_model(
        models.ModelConfig(weights='random', layer=layer, pooling=pooling))
    np.testing.assert_allclose(got, alone.predict_on_batch(x), rtol=1e-5,
                               atol=1e-5)
    assert got.shape[1:] == models.feature_shapes(config)[layer]


def test_batch_bytes_count_every_kept_output_but_the_last():
  one = models.ModelConfig(layer='block5_pool', batch_size=64,
                          max_batch_bytes=100 << 20)
  assert models.effective_batch_size(one) == 4  # block 1 alone, as before
  # block1_pool's output (112 x 112 x 64 floats, 3.2 MB) stays alive
  # beside the later layers: 28.9 MB an image, 3 fit in 100 MiB.
  several = dataclasses.replace(one, layer='block1_pool,block5_pool')
  assert models.effective_batch_size(several) == 3


def test_models_are_found_in_any_case_and_a_typo_gets_suggestions():
  assert models.catalog.find('ResNet50').name == 'resnet50'
  assert models.catalog.find(' EFFICIENTNETB0 ').keras_name == 'EfficientNetB0'
  with pytest.raises(ValueError, match='did you mean resnet50'):
    models.catalog.find('resnet5O')
  config = models.ModelConfig(model='InceptionV3')
  assert (config.model, config.image_size, config.preprocess) == (
      'inceptionv3', 299, 'tf')


@pytest.mark.parametrize('model', ['vgg16', 'resnet50', 'efficientnetb0',
                                   'mobilenetv3small', 'convnexttiny'])
def test_the_catalog_says_what_the_models_graph_says(model):
  """The listed feature layer is the last of the convolutional base, and
  the parameters are the base's, at the model's own size."""
  named = models.catalog.find(model)
  table = models.anatomy.model_table(model, named.input_size, False)
  assert table.rows[-1].name == named.feature_layer
  assert table.parameters == named.parameters
  config = models.resolve(models.ModelConfig(model=model))
  assert config.layer == named.feature_layer


def test_layer_names_are_the_same_in_every_build_of_a_process():
  """Keras numbers unnamed layers per thread; featurize's builds do not
  drift, so --layer means the same layer in the launcher and workers."""
  first = models.build_feature_model(models.ModelConfig(
      model='convnexttiny', weights='random', layer='layer_normalization'))
  second = models.build_feature_model(models.ModelConfig(
      model='convnexttiny', weights='random', layer='layer_normalization'))
  assert first.layers[-1].name == second.layers[-1].name == (
      'layer_normalization')


def test_layers_are_ordered_by_the_models_graph():
  config = models.resolve(models.ModelConfig(
      model='resnet50', layer='conv5_block3_out,conv3_block4_out',
      pooling='avg'))
  assert config.layers == ('conv3_block4_out', 'conv5_block3_out')
  assert models.feature_shapes(config) == {'conv3_block4_out': (512,),
                                           'conv5_block3_out': (2048,)}
  with pytest.raises(ValueError, match='did you mean conv5_block3_out'):
    models.resolve(models.ModelConfig(model='resnet50',
                                      layer='conv5_block3_ot'))


def test_the_peak_counts_every_tensor_a_later_layer_still_needs():
  row = models.anatomy.LayerRow
  # input(1) -> a(10) -> b(20) -> add(a, b)(10): while b runs, a is still
  # needed by add, so 10 + 20 are alive; a plain chain would peak lower.
  residual = [row('input', (1,), (), ((0, 1),)),
              row('a', (10,), (0,), ((1, 10),)),
              row('b', (20,), (1,), ((2, 20),)),
              row('add', (10,), (1, 2), ((3, 10),))]
  assert models.anatomy.peak_values(residual) == 40  # a, b and add's output
  chain = [row('input', (1,), (), ((0, 1),)),
           row('a', (10,), (0,), ((1, 10),)),
           row('b', (20,), (1,), ((2, 20),))]
  assert models.anatomy.peak_values(chain) == 30


def test_inputs_smaller_than_the_model_takes_are_refused():
  with pytest.raises(ValueError):
    models.resolve(models.ModelConfig(model='inceptionv3', image_size=64))


def test_the_cpu_predictor_traces_once_and_gives_keras_bytes():
  """Batches of every size through one trace, with the features Keras's
  own ``predict_on_batch`` gives, one layer or several."""
  x = _inputs(('chelsea', 'coffee', 'astronaut'))
  for layer, pooling in (('block2_pool', 'avg'),
                         ('block1_pool,block2_pool', 'max,none')):
    model = models.build_feature_model(models.ModelConfig(
        weights='random', layer=layer, pooling=pooling))
    predictor = models.batch_predictor(model)
    assert isinstance(predictor, models.AnyBatchSize)
    outputs = len(layer.split(','))
    for batch in (x, x[:1], x[:2]):
      ours = predictor.predict_on_batch(batch)
      keras_own = model.predict_on_batch(batch)
      if outputs == 1:
        ours, keras_own = [ours], [keras_own]
      assert len(ours) == len(keras_own) == outputs
      for got, want in zip(ours, keras_own):
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, want)
    # pylint: disable=protected-access
    assert predictor._forward.experimental_get_tracing_count() == 1
