"""What a batch costs, from the model's anatomy, and the batch size that
keeps it under ``max_batch_bytes``."""
from typing import Dict, Tuple

from transforms.extract.models.model_config import ModelConfig


def value_bytes(precision: str) -> int:
  """Bytes of one activation value: 2 in bfloat16, 4 in float32."""
  return 2 if precision == 'bfloat16' else 4


def activation_bytes(config: ModelConfig) -> int:
  """The largest activations one image holds during a pass.

  The graph's peak of live values (``Anatomy.peak_values``: for VGG16,
  block 1's convolution input and output, ``image_size^2 x 64`` each),
  plus each kept output but the deepest, which stays alive until the pass
  ends, at the precision's bytes a value.
  """
  anatomy = config.resolved
  return ((anatomy.peak_values + anatomy.kept_values) *
          value_bytes(config.precision))


def effective_batch_size(config: ModelConfig) -> int:
  """Batch size after applying the ``max_batch_bytes`` bound to
  ``activation_bytes`` an image."""
  return max(1, min(config.batch_size,
                    config.max_batch_bytes // activation_bytes(config)))


def weights_bytes(config: ModelConfig) -> int:
  """Bytes of the built model's variables: float32 in either precision
  (Keras's mixed policy keeps variables float32)."""
  return 4 * config.resolved.parameters


def feature_shapes(config: ModelConfig) -> Dict[str, Tuple[int, ...]]:
  """Each kept layer's feature shape for one image, in the model's
  order."""
  anatomy = config.resolved
  return dict(zip(anatomy.layers, anatomy.feature_shapes))


def feature_shape(config: ModelConfig) -> Tuple[int, ...]:
  """Shape of one image's features for a single-layer configuration.

  Raises:
    ValueError: the configuration keeps several layers (``feature_shapes``).
  """
  if config.multi_layer:
    raise ValueError(f'{config.layer!r} is several layers: feature_shapes')
  return config.resolved.feature_shapes[0]
