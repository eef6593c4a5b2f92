"""Ceilings: the model alone on device-resident batches.

* featurize's own model (``DeviceModel``: Keras VGG16 on JAX, jitted,
  cut at block5_pool) on a batch already on the GPU, float32 (true
  float32, as featurize runs it) and bfloat16, batch sizes 64 to 512;
* torchvision's VGG16 ``features`` (the same network) as a second
  reference, channels-last, float32 (PyTorch's default: TF32 convolutions)
  and bfloat16.

Decoding alone, and each other part of the GPU path, is measured by
``components``.

Each figure is images per second over a timed loop of at least
``seconds`` after a warm-up, ended by a device synchronisation.
"""
import time
from typing import Callable, Dict, Sequence

import numpy as np


def _rate(step: Callable[[], object], sync: Callable[[object], None],
          images_per_step: int, seconds: float) -> float:
  sync(step())  # warm-up: compile, autotune, allocate
  sync(step())
  steps, started = 0, time.perf_counter()
  while True:
    out = step()
    steps += 1
    if steps % 5 == 0:
      sync(out)
      elapsed = time.perf_counter() - started
      if elapsed >= seconds:
        return steps * images_per_step / elapsed


def featurize_model(precisions: Sequence[str], batches: Sequence[int],
                    seconds: float, pooling: str = 'none',
                    tf32: bool = True, model: str = 'vgg16'
                    ) -> Dict[str, Dict[int, float]]:
  """images/s of ``DeviceModel`` (``model`` at its feature layer and
  input size, ``pooling``) per precision and batch size; with ``tf32``
  also ``float32_tf32``: float32 with XLA's default TF32 convolutions,
  which featurize does not use (see ``tf32_parity``)."""
  # pylint: disable=import-outside-toplevel
  import jax
  from transforms.extract import models
  from transforms.extract.gpu.device_model import DeviceModel, visible_devices
  device = visible_devices(False)[:1]
  out = {}
  for precision in list(precisions) + (['float32_tf32'] if tf32 else []):
    out[precision] = {}
    for batch in batches:
      config = models.ModelConfig(
          model=model, weights='random', precision=precision.split('_')[0],
          pooling=pooling, batch_size=batch, max_batch_bytes=1 << 40,
          device='gpu')
      on_device = DeviceModel(config, device)
      side = config.image_size
      pixels = jax.device_put(
          np.random.default_rng(0).integers(0, 256, (batch, side, side, 3),
                                            dtype=np.uint8), device[0])
      with jax.default_matmul_precision(
          'tensorfloat32' if precision.endswith('tf32') else 'highest'):
        out[precision][batch] = round(_rate(
            lambda: on_device(pixels, 0),  # noqa: B023 (called in this turn)
            lambda y: y.block_until_ready(), batch,
            seconds), 1)
      print(f'ceiling {model} {precision} {pooling} batch {batch}: '
            f'{out[precision][batch]} images/s', flush=True)
  return out


def tf32_parity(reference_path: str, weights: str) -> Dict[str, float]:
  """How far TF32 convolutions take float32 features from the CPU path's
  (TensorFlow's, in ``tests/gpu/reference.py``'s file)."""
  # pylint: disable=import-outside-toplevel
  import jax
  from transforms.extract import models
  from transforms.extract.gpu.device_model import DeviceModel, visible_devices
  reference = np.load(reference_path)
  want = reference['tf_f32_none']
  model = DeviceModel(models.ModelConfig(
      weights=weights, batch_size=len(want), device='gpu'),
                      visible_devices(False)[:1])
  out = {}
  for name, precision in (('highest', 'highest'),
                          ('tf32', 'tensorfloat32')):
    with jax.default_matmul_precision(precision):
      got = np.asarray(model(reference['pixels'], 0))
    scale = np.abs(want).max()
    out[f'{name}_relative_l2'] = float(
        np.linalg.norm(got - want) / np.linalg.norm(want))
    out[f'{name}_max_abs_over_max'] = float(np.abs(got - want).max() / scale)
    out[f'{name}_elementwise_1e3_ok'] = bool(np.all(
        np.abs(got - want) <= 1e-3 * np.abs(want) + 1e-4 * scale))
  print(f'TF32 parity: {out}', flush=True)
  return out


def torchvision_model(precisions: Sequence[str], batches: Sequence[int],
                      seconds: float) -> Dict[str, Dict[int, float]]:
  """images/s of torchvision's VGG16 convolutional part."""
  # pylint: disable=import-outside-toplevel
  import torch
  import torchvision
  dtypes = {'float32': torch.float32, 'bfloat16': torch.bfloat16}
  out = {}
  for precision in precisions:
    out[precision] = {}
    net = torchvision.models.vgg16(weights=None).features.eval().cuda().to(
        dtypes[precision], memory_format=torch.channels_last)
    for batch in batches:
      x = torch.randn(batch, 3, 224, 224, device='cuda',
                      dtype=dtypes[precision]).to(
                          memory_format=torch.channels_last)
      with torch.inference_mode():
        out[precision][batch] = round(_rate(
            lambda: net(x),  # noqa: B023 (called in this turn)
            lambda y: torch.cuda.synchronize(), batch,
            seconds), 1)
      print(f'ceiling torchvision {precision} batch {batch}: '
            f'{out[precision][batch]} images/s', flush=True)
    torch.cuda.empty_cache()
  return out
