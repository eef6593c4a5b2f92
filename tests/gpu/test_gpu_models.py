"""Models other than VGG16 on the GPU (Keras on JAX) against the CPU
path's TensorFlow: ResNet50 (caffe preprocessing, batch normalisation)
and EfficientNetB0 (no preprocessing outside the model, depthwise
convolutions), each with the tests' seeded weights, on the CPU path's
pixels of the demo JPEGs at the model's own input size (the model's
preprocessing runs on the GPU)."""
import numpy as np
import pytest

from tests.gpu.reference import OTHER_MODELS, weights_digest
from tests.support.arrays import relative_l2
from tests.support.weights import write_model_weights
from transforms.extract import models
from transforms.extract.gpu.device_model import DeviceModel, visible_devices


@pytest.mark.parametrize('name', OTHER_MODELS)
def test_float32_features_equal_the_cpu_paths_within_1e3(
    tmp_path, reference, name):
  weights = write_model_weights(
      str(tmp_path / models.catalog.find(name).weights_file_notop), name)
  assert weights_digest(weights) == str(
      reference[f'{name}_weights_digest'])
  config = models.ModelConfig(model=name, weights=weights,
                              precision='float32', pooling='none',
                              batch_size=8, device='gpu')
  pixels = reference[f'{name}_pixels']
  assert pixels.shape[1:3] == (config.image_size, config.image_size)
  got = np.asarray(DeviceModel(config, visible_devices(False)[:1])(
      pixels, 0))
  want = reference[f'{name}_f32_none']
  scale = np.abs(want).max()
  print(f'{name} float32: rel L2 {relative_l2(got, want):.2e}, max abs / '
        f'max {np.abs(got - want).max() / scale:.2e}')
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * scale)
  assert relative_l2(got, want) < 1e-3
