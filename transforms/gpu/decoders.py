"""JPEG decoding on the GPU (nvJPEG through torchvision) and its resize.

A decoder takes the encoded bytes of JPEGs that ``jpeg_header`` let
through and returns, for each, the model-sized RGB pixels, or None where
it could not decode one (the caller then asks the CPU path). It also
stacks rows into the model's fixed-size batch on its device.

The resize is the CPU path's own rule (``resample``: Pillow's bilinear
resampling with the crop box, as two weight matrices), so an image
decoded on the GPU differs from the CPU path only by the decoders
themselves: nvJPEG's IDCT and chroma upsampling against libjpeg-turbo's,
and Pillow's DCT-domain downscaling of large JPEGs, which nvJPEG lacks.
"""
import functools
import io
import warnings
from collections import defaultdict
from typing import Any, List, Optional, Sequence

import numpy as np

from transforms import imaging
from transforms.gpu import orientation, resample

# Float64 working memory of one resize step on the device.
MAX_RESIZE_BYTES = 512 << 20


class NvjpegDecoder:
  """nvJPEG on one CUDA device, through ``torchvision.io.decode_jpeg``.

  A list of images is decoded in one call (nvJPEG's batched decoder);
  when that call fails because of one image, each is decoded alone so
  that only the bad ones go back to the CPU path. Images of one size are
  resized together, as two batched matrix products.
  """

  def __init__(self, device_index: int, config: imaging.DecodeConfig):
    # pylint: disable=import-outside-toplevel
    import torch
    from torchvision import io as tv_io
    self._torch = torch
    self._device = torch.device('cuda', device_index)
    # apply_exif_orientation is ignored on CUDA: decode() applies it.
    self._decode_jpeg = functools.partial(
        tv_io.decode_jpeg, mode=tv_io.ImageReadMode.RGB, device=self._device)
    self._config = config
    self._plans = functools.lru_cache(maxsize=256)(self._plan)

  def _plan(self, width: int, height: int):
    plan = resample.resize_plan(width, height, self._config)
    to_device = functools.partial(self._torch.as_tensor, device=self._device,
                                  dtype=self._torch.float64)
    return plan, to_device(plan.rows), to_device(plan.cols)

  def decode(self, datas: Sequence[bytes],
             orientations: Sequence[int]) -> List[Optional[Any]]:
    """Decodes and resizes JPEGs; None for those nvJPEG refused.

    Args:
      datas: The encoded images.
      orientations: Their EXIF orientations (``jpeg_header``), applied
        here: nvJPEG ignores them.
    """
    torch = self._torch
    # decode_jpeg wants CPU uint8 tensors; frombuffer wraps the bytes
    # without a copy (it warns that bytes are read-only; they are only read).
    with warnings.catch_warnings():
      warnings.filterwarnings('ignore', message='.*not writable.*')
      encoded = [torch.frombuffer(data, dtype=torch.uint8) for data in datas]
    try:
      images = self._decode_jpeg(encoded)
    except RuntimeError:
      images = [self._decode_one(one) for one in encoded]
    images = [None if image is None else orientation.apply_torch(image, turn)
              for image, turn in zip(images, orientations)]
    return self._resize_all(images)

  def _decode_one(self, encoded) -> Optional[Any]:
    try:
      return self._decode_jpeg(encoded)
    except RuntimeError:
      return None

  def _resize_all(self, images: List[Optional[Any]]) -> List[Optional[Any]]:
    by_size = defaultdict(list)
    for index, image in enumerate(images):
      if image is not None:
        by_size[tuple(image.shape[1:])].append(index)
    resized: List[Optional[Any]] = [None] * len(images)
    for (height, width), indices in by_size.items():
      plan, rows, cols = self._plans(width, height)
      span = plan.rows.shape[1] * plan.cols.shape[1] * 3 * 8
      step = max(1, MAX_RESIZE_BYTES // span)
      for start in range(0, len(indices), step):
        part = indices[start:start + step]
        out = self._resize(
            self._torch.stack([images[i] for i in part]), plan, rows, cols)
        for index, row in zip(part, out):
          resized[index] = row
    return resized

  def _resize(self, images, plan, rows, cols):
    """``(n, 3, H, W)`` uint8 to ``(n, S, S, 3)`` uint8, in the order of
    ``resample.apply_plan``'s docstring. In float64, whose 53 bits hold
    every sum exactly (float32 misses Pillow's rounding in ~0.2% of
    values); the H200 runs float64 products at about the float32 rate."""
    torch = self._torch
    span_h, span_w = plan.rows.shape[1], plan.cols.shape[1]
    x = images[:, :, plan.top:plan.top + span_h,
               plan.left:plan.left + span_w].double()

    def horizontal(x):
      if plan.skip_horizontal:
        return x[..., :plan.cols.shape[0]]
      return _round(torch.einsum('nchw,ow->ncho', x, cols))

    def vertical(x):
      if plan.skip_vertical:
        return x[:, :, :plan.rows.shape[0]]
      return _round(torch.einsum('nchw,oh->ncow', x, rows))

    x = horizontal(vertical(x)) if plan.vertical_first else vertical(
        horizontal(x))
    return x.to(torch.uint8).permute(0, 2, 3, 1)

  def stack(self, pixels: Sequence[Any], batch_size: int):
    """Rows (device tensors, or numpy arrays from the CPU path) into one
    ``(batch_size, S, S, 3)`` JAX array on this device, zero-padded."""
    torch = self._torch
    size = self._config.image_size
    rows = [p if isinstance(p, torch.Tensor) else
            torch.from_numpy(np.ascontiguousarray(p)).to(self._device)
            for p in pixels]
    padding = batch_size - len(rows)
    if padding:
      rows.append(torch.zeros((padding, size, size, 3), dtype=torch.uint8,
                              device=self._device))
      batch = torch.cat([r if r.dim() == 4 else r.unsqueeze(0) for r in rows])
    else:
      batch = torch.stack(rows)
    # JAX reads the memory on its own stream: let torch's work finish
    # first. The model of the previous batch keeps the GPU busy meanwhile.
    torch.cuda.current_stream(self._device).synchronize()
    import jax.dlpack  # pylint: disable=import-outside-toplevel
    return jax.dlpack.from_dlpack(batch)


def _round(values):
  """``resample``'s rounding: add one half, floor, clip to 0..255."""
  return (values + 0.5).floor_().clamp_(0.0, 255.0)


class PillowStandIn:
  """nvJPEG's stand-in on the CPU, for tests on machines without a GPU.

  Decodes like nvJPEG (full size, stored orientation, RGB), with Pillow,
  turns the pixels by the given orientation as ``NvjpegDecoder`` does,
  then resizes with ``resample.apply_plan``; stacks numpy rows.
  """

  def __init__(self, config: imaging.DecodeConfig):
    self._config = config

  def decode(self, datas: Sequence[bytes],
             orientations: Sequence[int]) -> List[Optional[np.ndarray]]:
    from PIL import Image  # pylint: disable=import-outside-toplevel
    out = []
    for data, turn in zip(datas, orientations):
      try:
        with Image.open(io.BytesIO(data), formats=['JPEG']) as image:
          pixels = orientation.apply_numpy(
              np.asarray(image.convert('RGB')), turn)
      except Exception:  # pylint: disable=broad-except
        out.append(None)  # what nvJPEG refuses goes to the CPU path
        continue
      plan = resample.resize_plan(pixels.shape[1], pixels.shape[0],
                                  self._config)
      out.append(resample.apply_plan(pixels, plan))
    return out

  def stack(self, pixels: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
    size = self._config.image_size
    batch = np.zeros((batch_size, size, size, 3), np.uint8)
    for index, row in enumerate(pixels):
      batch[index] = row
    return batch


def make_decoder(device_index: int, config: imaging.DecodeConfig,
                 on_cpu: bool):
  """The decoder for one replica's device (``PillowStandIn`` on CPU)."""
  if on_cpu:
    return PillowStandIn(config)
  return NvjpegDecoder(device_index, config)
