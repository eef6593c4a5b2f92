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
