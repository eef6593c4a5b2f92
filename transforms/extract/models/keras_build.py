"""The feature model: a model of ``keras.applications`` with its weights,
cut at the deepest requested layer.

The model is cut there, so the activations of later layers are never
computed, and it returns only the requested layers' outputs: every other
activation is freed as soon as the layers that need it have run. Several
layers come from one forward pass (``--layer block3_pool,block5_pool``).
"""
import collections
import contextlib
import logging
import threading

import numpy as np

from transforms.extract.models import catalog, model_files, weight_files
from transforms.extract.models.model_config import ModelConfig

# Keras's dtype policy and its layer-name counters are per thread, and a
# build changes both; builds hold this lock, so that two threads of one
# process never build under each other's settings.
_BUILD_LOCK = threading.Lock()
# Variables that start at one rather than at zero when weights are random
# (a normalisation's scale and variance), so that random models pass
# activations on at a sensible scale.
_ONES = ('gamma', 'moving_variance', 'variance')


@contextlib.contextmanager
def _fresh_names():
  """Builds inside get the names a first build in a fresh process gets.

  Keras names a layer that its model leaves unnamed from a counter that
  lives as long as the thread (a second ConvNeXt's last layer is
  ``layer_normalization_1``). ``--layer`` names must mean the same layer
  in the launcher, which builds the model to plan, and in every worker,
  so each build counts from zero. Keras has no public switch for this:
  the counters are its ``object_name_uids`` global attribute.
  """
  from keras.src.backend.common import global_state  # pylint: disable=import-outside-toplevel
  saved = global_state.get_global_attribute('object_name_uids')
  global_state.set_global_attribute('object_name_uids',
                                    collections.defaultdict(int))
  try:
    yield
  finally:
    global_state.set_global_attribute('object_name_uids', saved)


@contextlib.contextmanager
def building(precision: str = 'float32'):
  """Holds the build lock, with fresh layer names and ``precision``'s
  dtype policy (Keras ``mixed_bfloat16`` for ``bfloat16``)."""
  import keras  # pylint: disable=import-outside-toplevel
  policy = 'mixed_bfloat16' if precision == 'bfloat16' else 'float32'
  with _BUILD_LOCK, _fresh_names():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
      yield
    finally:
      keras.config.set_dtype_policy(previous)


def construct(named: catalog.NamedModel, include_top: bool, image_size: int,
              weights=None):
  """The Keras model as ``keras.applications`` builds it (call inside
  ``building``).

  Args:
    weights: What Keras's constructor takes: None, ``imagenet`` or the
      path of a weight file.
  """
  import keras  # pylint: disable=import-outside-toplevel
  return getattr(keras.applications, named.keras_name)(
      include_top=include_top, weights=weights,
      input_shape=(image_size, image_size, 3))


def set_random_weights(model, seed: int) -> None:
  """He-normal kernels, zero biases and shifts, unit scales, from a
  seeded numpy generator.

  Done by hand rather than with Keras initialisers so that every worker
  gets bit-identical weights whatever Keras's global seed state is.
  """
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    values = []
    for variable in layer.weights:
      shape = tuple(variable.shape)
      name = variable.name.rsplit('/', 1)[-1]
      if name.endswith('kernel') and len(shape) >= 2:
        # A depthwise kernel (height, width, channels, multiplier) sees
        # one channel a filter; any other sees all of its input axes.
        fan_in = int(np.prod(shape[:-2] if name == 'depthwise_kernel'
                             else shape[:-1]))
        value = rng.standard_normal(shape, dtype=np.float32)
        value *= np.float32(np.sqrt(2.0 / fan_in))
      elif name in _ONES:
        value = np.ones(shape, np.float32)
      else:
        value = np.zeros(shape, np.dtype(variable.dtype))
      values.append(value)
    if values:
      layer.set_weights(values)


def _with_weights(config: ModelConfig, include_top: bool):
  if config.is_file:
    return model_files.load(config)
  named = config.named
  if config.weights == 'imagenet':
    try:
      return construct(named, include_top, config.image_size, 'imagenet')
    except Exception as e:
      file_name = named.official_weights_file(include_top)
      raise RuntimeError(
          f'Could not load the ImageNet weights of {named.keras_name} ({e}). '
          f'Download {file_name} (Keras\'s download URL is in the message '
          f'above) and place it at {weight_files.keras_cache_path(file_name)}'
          f', or pass --weights /path/to/{file_name}.') from e
  if config.weights == 'random':
    model = construct(named, include_top, config.image_size)
    set_random_weights(model, config.seed)
    return model
  path = weight_files.local_weights_copy(config)
  try:
    return construct(named, include_top, config.image_size, path)
  except ValueError as e:
    raise ValueError(
        f'weight file {config.weights} does not fit {named.keras_name} '
        f'{"with" if include_top else "without"} its top ({e}); layer '
        f'{config.layer!r} needs '
        f'{named.official_weights_file(include_top)}') from e


def build_feature_model(config: ModelConfig):
  """Builds the model with its weights, cut at the deepest of
  ``config.layers``, each output pooled.

  Returns:
    A Keras model mapping preprocessed ``(n, size, size, 3)`` float input
    (``preprocess.to_model_input``) to ``(n, ...)`` features; with several
    layers, to a list of them in the order of ``config.layers``.
  """
  import keras  # pylint: disable=import-outside-toplevel
  anatomy = config.resolved
  with building(config.precision):
    base = _with_weights(config, anatomy.include_top)
    outputs = []
    for name, pooling in zip(anatomy.layers, anatomy.poolings):
      output = base.get_layer(name).output
      # One name a pooled output (Keras wants them unique); 'pool' alone
      # for a single layer.
      pool_name = f'{name}_pool' if config.multi_layer else 'pool'
      if pooling == 'avg':
        output = keras.layers.GlobalAveragePooling2D(name=pool_name)(output)
      elif pooling == 'max':
        output = keras.layers.GlobalMaxPooling2D(name=pool_name)(output)
      outputs.append(output)
    # A functional model computes only what its outputs need: the layers
    # after the deepest requested one are never run.
    model = keras.Model(base.input,
                        outputs if config.multi_layer else outputs[0],
                        name='features')
  logging.info('Built %s to %s (pooling %s, %s, weights %s)',
               config.display_name, ','.join(anatomy.layers),
               ','.join(anatomy.poolings), config.precision, config.weights)
  return model


class AnyBatchSize:
  """A feature model's forward pass as one TensorFlow function whose batch
  dimension is unknown, so that it is traced once for every batch size.

  Keras's ``predict_on_batch`` traces its function for the first batch
  size, and again for the next new one (a bundle's last, smaller batch).
  On 2 cores that second trace cost EfficientNetB0 2.2 s, against 0.3 s
  a batch of 16: seconds of every worker process's time on a short run.
  The features are the same bytes either way (tests/unit/extract).
  ``predict_on_batch`` keeps Keras's signature, so RunInference's
  ``large_model`` proxy calls it as it would the model's.
  """

  def __init__(self, model):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    self._forward = tf.function(lambda x: model(x, training=False),
                                input_signature=[spec])

  def predict_on_batch(self, inputs: np.ndarray):
    """Features of a batch: an array, or a list of them for several
    layers (as ``keras.Model.predict_on_batch``)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return tf.nest.map_structure(lambda t: t.numpy(), self._forward(inputs))


def batch_predictor(model):
  """``model`` behind ``AnyBatchSize`` where Keras runs on TensorFlow
  (the CPU path); ``model`` itself on another backend."""
  import keras  # pylint: disable=import-outside-toplevel
  if keras.backend.backend() != 'tensorflow':
    return model
  return AnyBatchSize(model)
