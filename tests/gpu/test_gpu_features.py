"""VGG16 on the GPU (Keras on JAX) against the CPU path's TensorFlow."""
import numpy as np
import pytest

from tests.support.arrays import cosines, relative_l2
from transforms.decode import imaging
from transforms.extract import models
from transforms.extract.gpu import decoders, device_batches
from transforms.extract.gpu.device_model import DeviceModel, visible_devices
from transforms.records import ImageRecord


def model(weights, precision, pooling, batch):
  return DeviceModel(models.ModelConfig(
      weights=weights, precision=precision, pooling=pooling,
      batch_size=batch, device='gpu'), visible_devices(False)[:1])


@pytest.mark.parametrize('pooling', ['none', 'avg'])
def test_float32_features_equal_the_cpu_paths_within_1e3(gpu_weights,
                                                         reference, pooling):
  want = reference[f'tf_f32_{pooling}']
  got = np.asarray(model(gpu_weights, 'float32', pooling, 8)(
      reference['pixels'], 0))
  scale = np.abs(want).max()
  print(f'float32 {pooling}: rel L2 {relative_l2(got, want):.2e}, max abs '
        f'/ max {np.abs(got - want).max() / scale:.2e}')
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * scale)
  assert relative_l2(got, want) < 1e-3


def test_bfloat16_features_keep_cosine_0999(gpu_weights, reference):
  got = np.asarray(model(gpu_weights, 'bfloat16', 'none', 8)(
      reference['pixels'], 0))
  assert np.isfinite(got).all()
  lowest = cosines(got, reference['tf_f32_none']).min()
  print(f'bfloat16: min cosine {lowest:.6f}')
  assert cosines(got, reference['tf_f32_none']).min() >= 0.999


def test_gpu_decoded_features_are_close_to_the_cpu_paths(gpu_weights,
                                                         reference):
  config = imaging.DecodeConfig()
  device_model = model(gpu_weights, 'float32', 'none', 8)
  images = [ImageRecord(name, 'ref', data)
            for name, data in reference['jpegs'].items()]
  batch, errors = device_batches.batch_of(images, config)
  assert not errors and len(batch.device) == len(images)
  pending, errors = device_batches.start_batch(
      batch, decoders.NvjpegDecoder(0, config, 8), device_model, 0, config)
  assert not errors and pending.on_device == len(images)
  features, errors = device_batches.finish_batch(pending)
  assert not errors
  got = {f.key: f.features for f in features}
  names = [str(n) for n in reference['names']]
  similarity = cosines(np.stack([got[n] for n in names]),
                       reference['tf_f32_none'])
  print('GPU-decoded vs CPU path cosine:',
        dict(zip(names, np.round(similarity, 6))))
  assert similarity.min() >= 0.99
