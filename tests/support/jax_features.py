"""VGG16 features of the demo photos through the GPU path's model.

Run as a script (``python -m tests.support.jax_features WEIGHTS OUT.npz
PRECISION POOLING [LAYER]``, LAYER one or several joined by ",") in a
process of its own: Keras picks its backend
once per process, and the test process runs Keras on TensorFlow. The
pixels come from the CPU path's decoder, so the comparison with
TensorFlow isolates the model. With ``FEATURIZE_GPU_PATH_ON_CPU`` set the
model runs on JAX's CPU device; without it, on the GPUs.
"""
import sys

import numpy as np

PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'motorcycle_left',
          'hubble_deep_field', 'retina', 'camera')


def demo_pixels() -> np.ndarray:
  """The photos decoded and resized by the CPU path: ``(8, 224, 224, 3)``."""
  # pylint: disable=import-outside-toplevel
  from tests.support import image_zoo
  from transforms.decode import imaging
  config = imaging.DecodeConfig()
  return np.stack([
      imaging.decode_image(image_zoo.encode(image_zoo.photo(name), 'PNG'),
                           config) for name in PHOTOS])


def model_config(weights: str, precision: str, pooling: str,
                 layer: str = 'block5_pool'):
  from transforms.extract import models  # pylint: disable=import-outside-toplevel
  return models.ModelConfig(weights=weights, precision=precision,
                           pooling=pooling, layer=layer,
                           batch_size=len(PHOTOS), device='gpu')


def main(argv) -> None:
  weights, out, precision, pooling = argv[:4]
  layer = argv[4] if len(argv) > 4 else 'block5_pool'
  # pylint: disable=import-outside-toplevel
  from transforms.extract import backend
  backend.select('gpu')
  from transforms.extract.gpu.device_model import DeviceModel, visible_devices
  model = DeviceModel(model_config(weights, precision, pooling, layer),
                      visible_devices(backend.on_cpu_stand_in())[:1])
  outputs = model(demo_pixels(), 0)
  if isinstance(outputs, dict):  # several layers: one array each
    np.savez(out, device=str(model.devices[0]),
             **{f'features/{k}': np.asarray(v) for k, v in outputs.items()})
    return
  np.savez(out, features=np.asarray(outputs), device=str(model.devices[0]))


if __name__ == '__main__':
  main(sys.argv[1:])
