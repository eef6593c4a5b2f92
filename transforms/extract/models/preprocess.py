"""Pixels to model input, in the mode of the model's family.

The one rule for both devices: ``uint8`` RGB to float32, then Keras's own
``imagenet_utils.preprocess_input`` in the model's mode
(``catalog.PREPROCESS_MODES``), which works on numpy arrays (the CPU path)
and on backend tensors inside a jitted function (the GPU path); ``none``
leaves the pixels in 0-255 for models that rescale them themselves.
"""
from typing import Sequence

from transforms.extract.models.model_config import ModelConfig

import numpy as np


def preprocess(batch, mode: str):
  """Applies ``mode`` to float32 RGB pixels in 0-255 (numpy or a backend
  tensor); returns the model's input."""
  if mode == 'none':
    return batch
  from keras.applications import imagenet_utils  # pylint: disable=import-outside-toplevel
  return imagenet_utils.preprocess_input(batch, mode=mode)


def to_model_input(pixels: Sequence[np.ndarray], mode: str) -> np.ndarray:
  """Stacks RGB ``uint8`` images into the model's float input."""
  return preprocess(np.stack(pixels).astype(np.float32), mode)


def describe(config: ModelConfig) -> str:
  """The model's preprocessing, for the manifest and a refresh's
  fingerprint: the family's own function where it is the family's mode."""
  if not config.is_file and config.preprocess == config.named.preprocess:
    return f'keras.applications.{config.named.family}.preprocess_input'
  return ('keras.applications.imagenet_utils.preprocess_input, mode '
          f'{config.preprocess}')
