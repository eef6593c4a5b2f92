"""VGG16 on Keras 3's JAX backend: jitted once, a weight replica per device.

Why ``jax.jit(model.stateless_call)`` and not ``predict_on_batch``: Keras's
JAX ``predict_on_batch`` donates every weight buffer on each call, which is
not safe when several Beam threads share one model, and it always copies
the result to the host. The jitted function takes the weights as
arguments, so one compiled program serves every replica (the device of
the arguments picks where it runs), calls return at once (JAX dispatches
asynchronously: the host prepares the next batch while this one runs),
and the result stays on the device until it is asked for.
"""
import logging
from typing import Any, List, Sequence

import numpy as np

from transforms.extract import models, quiet_import
from transforms.extract.models import preprocess


class DeviceModel:
  """VGG16 cut at a layer, ready on each of ``devices``.

  Call it with a batch of RGB ``uint8`` images of shape
  ``(batch_size, size, size, 3)`` (pad a short batch: every new shape
  costs a compile) and a replica index; it returns the float32 features
  as a device array (a dict of them by layer name, for several layers),
  without waiting for them.
  """

  def __init__(self, config: models.ModelConfig, devices: Sequence[Any]):
    quiet_import.import_quietly('gpu')
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    if config.precision == 'float32':
      # XLA's default float32 convolution on Ampere and later GPUs is TF32
      # (10-bit mantissa), which lands near the 1e-3 parity bound with the
      # CPU path (docs/GPU_GROUNDWORK.md); 'highest' is true float32. Set
      # before the first trace: it is part of the jit cache key.
      jax.config.update('jax_default_matmul_precision', 'highest')
    self.config = config
    self.batch_size = models.effective_batch_size(config)
    self.devices = list(devices)
    model = models.build_feature_model(config)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    self._replicas = [(jax.device_put(trainable, device),
                       jax.device_put(non_trainable, device))
                      for device in self.devices]

    def infer(trainable, non_trainable, pixels):
      # The same preprocessing as the CPU path (models.to_model_input),
      # here on the device: uint8 -> float32, then the model's mode.
      inputs = preprocess.preprocess(pixels.astype(jnp.float32),
                                     config.preprocess)
      outputs, _ = model.stateless_call(trainable, non_trainable, inputs,
                                        training=False)
      if config.multi_layer:  # a list in config.layers' order: by name
        return {layer: out.astype(jnp.float32)
                for layer, out in zip(config.layers, outputs)}
      return outputs.astype(jnp.float32)

    self._infer = jax.jit(infer)
    self._jax = jax
    size = config.image_size
    for index in range(len(self.devices)):  # compile now, not mid-run
      jax.block_until_ready(self(
          np.zeros((self.batch_size, size, size, 3), np.uint8), index))
    logging.info('%s on %d device(s): %s', config.display_name,
                 len(self.devices),
                 ', '.join(str(d) for d in self.devices))

  def __call__(self, pixels, replica: int):
    """Starts the model on one batch; returns its device array at once.

    Args:
      pixels: ``uint8`` ``(batch_size, size, size, 3)``: a numpy array or
        a JAX array (which should live on the replica's device).
      replica: Index into ``devices``.
    """
    trainable, non_trainable = self._replicas[replica]
    if isinstance(pixels, np.ndarray):
      pixels = self._jax.device_put(pixels, self.devices[replica])
    return self._infer(trainable, non_trainable, pixels)


def visible_devices(on_cpu: bool) -> List[Any]:
  """The devices to put replicas on: every GPU JAX sees.

  Args:
    on_cpu: Use JAX's CPU device instead (the test seam of
      ``backend.ON_CPU_ENV``).

  Raises:
    RuntimeError: no GPU is visible, with what JAX said.
  """
  quiet_import.import_quietly('gpu')
  import jax  # pylint: disable=import-outside-toplevel
  if on_cpu:
    return jax.devices('cpu')[:1]
  try:
    return jax.devices('gpu')
  except RuntimeError as e:
    raise RuntimeError(
        f'--device gpu: JAX sees no GPU ({e}). Install featurize[gpu] on a '
        'machine with an NVIDIA GPU and driver, or use --device cpu.') from e
