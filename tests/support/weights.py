"""VGG16 weight files in the official Keras layout, made here."""
import numpy as np


def write_official_weights(path: str, include_top: bool = False,
                           seed: int = 123) -> str:
  """Writes VGG16 weights as the official ``..._notop.h5`` files are laid
  out (Keras's legacy HDF5 weight format: one group per layer, in order).

  The real ImageNet weights cannot be downloaded here; these are random but
  loaded by exactly the same code.
  """
  import h5py
  import keras
  from keras.src.legacy.saving import legacy_h5_format
  model = keras.applications.VGG16(include_top=include_top, weights=None)
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if layer.weights:
      kernel, bias = layer.get_weights()
      scale = np.sqrt(2.0 / np.prod(kernel.shape[:-1]))
      layer.set_weights([
          (rng.standard_normal(kernel.shape) * scale).astype(np.float32),
          (rng.standard_normal(bias.shape) * 0.01).astype(np.float32)])
  with h5py.File(path, 'w') as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, model)
  return path


def write_model_weights(path: str, model: str, include_top: bool = False,
                        seed: int = 7) -> str:
  """Writes weights of any model of ``keras.applications`` as its official
  weight file is laid out (the legacy HDF5 format Keras downloads).

  Random, but every variable differs from its initial value (normalisation
  statistics too), so a loader that skipped one would show.
  """
  import h5py
  import keras
  from keras.src.legacy.saving import legacy_h5_format

  from transforms.extract import models
  named = models.catalog.find(model)
  built = getattr(keras.applications, named.keras_name)(
      include_top=include_top, weights=None)
  rng = np.random.default_rng(seed)
  for layer in built.layers:
    values = []
    for variable in layer.weights:
      shape = tuple(variable.shape)
      name = variable.name.rsplit('/', 1)[-1]
      if not np.issubdtype(np.dtype(variable.dtype), np.floating):
        values.append(np.asarray(variable.numpy()))
      elif name.endswith('kernel') and len(shape) >= 2:
        fan_in = np.prod(shape[:-2] if name == 'depthwise_kernel'
                         else shape[:-1])
        values.append((rng.standard_normal(shape) *
                       np.sqrt(2.0 / fan_in)).astype(np.float32))
      elif name in ('gamma', 'moving_variance', 'variance'):
        values.append(rng.uniform(0.5, 1.5, shape).astype(np.float32))
      else:
        values.append((rng.standard_normal(shape) * 0.05).astype(np.float32))
    if values:
      layer.set_weights(values)
  with h5py.File(path, 'w') as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, built)
  return path
