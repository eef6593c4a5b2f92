"""JPEG decoding on the GPU (nvJPEG through torchvision) and the resize.

A decoder takes the encoded bytes of JPEGs that ``routing`` sent to the
device and returns, for each, the full-size pixels as stored (EXIF
orientation not applied), or None where it could not decode one (the
caller then asks the CPU path). ``resize_batch`` then turns a whole
batch of such images, of any sizes, plus rows the CPU decoder already
made model-sized, into the model's fixed-size batch on the device, in one
ragged call (``ragged_resize``): the CPU path's own resize rule
(Pillow's bilinear resampling with the crop box) in integer arithmetic,
bit for bit, with each image's EXIF orientation folded into the
addresses it reads.

So an image decoded on the GPU differs from the CPU path only by the
decoders themselves: nvJPEG's IDCT and chroma upsampling against
libjpeg-turbo's, and Pillow's DCT-domain downscaling of large JPEGs,
which nvJPEG lacks.
"""
import functools
import io
import warnings
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from transforms.decode import imaging
from transforms.extract.gpu import ragged_resize


def decode_each_on_failure(decode, encoded: Sequence[Any]) -> List[Any]:
  """``decode(encoded)`` for the whole list; where that raises, ``decode``
  of each image alone, with None for each that raises too (the CPU path
  then decides). torchvision raises RuntimeError for data nvJPEG rejects,
  but ValueError and TypeError from its own checks, and CUDA's errors
  (out of memory) are RuntimeErrors too: none of them may end the run."""
  try:
    return list(decode(list(encoded)))
  except Exception:  # pylint: disable=broad-except
    out = []
    for one in encoded:
      try:
        out.append(decode(one))
      except Exception:  # pylint: disable=broad-except
        out.append(None)
    return out


class NvjpegDecoder:
  """nvJPEG on one CUDA device, through ``torchvision.io.decode_jpeg``.

  A list of images is decoded in one call (nvJPEG's batched decoder);
  when that call fails because of one image, each is decoded alone so
  that only the bad ones go back to the CPU path.
  """

  def __init__(self, device_index: int, config: imaging.DecodeConfig,
               batch_size: int):
    # pylint: disable=import-outside-toplevel
    import torch
    from torchvision import io as tv_io
    self._torch = torch
    self._device = torch.device('cuda', device_index)
    # apply_exif_orientation is ignored on CUDA: the resize applies it.
    self._decode_jpeg = functools.partial(
        tv_io.decode_jpeg, mode=tv_io.ImageReadMode.RGB, device=self._device)
    self._resizer = ragged_resize.RaggedResize(config, batch_size)

  def decode(self, datas: Sequence[bytes]) -> List[Optional[Any]]:
    """Decodes JPEGs to ``(3, H, W)`` uint8 CUDA tensors, as stored; None
    for those nvJPEG refused."""
    torch = self._torch
    # decode_jpeg wants CPU uint8 tensors; frombuffer wraps the bytes
    # without a copy (it warns that bytes are read-only; they are only read).
    with warnings.catch_warnings():
      warnings.filterwarnings('ignore', message='.*not writable.*')
      encoded = [torch.frombuffer(data, dtype=torch.uint8) for data in datas]
    return decode_each_on_failure(self._decode_jpeg, encoded)

  def resize_batch(self, images: Sequence[Tuple[Any, int]],
                   rows: Sequence[np.ndarray]):
    """A batch's images, of any sizes, into the model's input: one
    ``(batch_size, S, S, 3)`` uint8 JAX array on this device, zero-padded.

    Args:
      images: ``(pixels, orientation)`` pairs: nvJPEG's ``(3, H, W)``
        tensors (from ``decode``) with their EXIF orientation.
      rows: The CPU decoder's model-sized ``(S, S, 3)`` numpy rows; they
        follow ``images`` in the batch.
    """
    torch = self._torch
    sources, total = ragged_resize.back_to_back(
        [tuple(p.shape) for p, _ in images] + [r.shape for r in rows],
        [turn for _, turn in images] + [1] * len(rows),
        ['chw'] * len(images) + ['hwc'] * len(rows),
        resized=[False] * len(images) + [True] * len(rows))
    packed = self._resizer.pack(sources)
    parts = [p.reshape(-1) for p, _ in images]
    if rows:  # one host-to-device copy for all the CPU rows
      parts.append(torch.from_numpy(np.stack(rows)).to(self._device).reshape(
          -1))
    flat = torch.empty(packed.flat_size, dtype=torch.uint8,
                       device=self._device)
    torch.cat(parts, out=flat[:total])
    # JAX reads the memory on its own stream: let torch's work finish
    # first. The model of the previous batch keeps the GPU busy meanwhile.
    torch.cuda.current_stream(self._device).synchronize()
    import jax.dlpack  # pylint: disable=import-outside-toplevel
    return self._resizer.run(jax.dlpack.from_dlpack(flat), packed)


class PillowStandIn:
  """nvJPEG's stand-in on the CPU, for tests on machines without a GPU.

  Decodes like nvJPEG (full size, stored orientation, RGB), with Pillow,
  into ``(H, W, 3)`` numpy arrays; ``resize_batch`` runs the same ragged
  resize as on the GPU, on JAX's CPU device.
  """

  def __init__(self, config: imaging.DecodeConfig, batch_size: int,
               jax_device=None):
    self._resizer = ragged_resize.RaggedResize(config, batch_size)
    self._jax_device = jax_device

  def decode(self, datas: Sequence[bytes]) -> List[Optional[np.ndarray]]:
    from PIL import Image  # pylint: disable=import-outside-toplevel
    out: List[Optional[np.ndarray]] = []
    for data in datas:
      try:
        with Image.open(io.BytesIO(data), formats=['JPEG']) as image:
          out.append(np.asarray(image.convert('RGB')))
      except Exception:  # pylint: disable=broad-except
        out.append(None)  # what nvJPEG refuses goes to the CPU path
    return out

  def resize_batch(self, images: Sequence[Tuple[np.ndarray, int]],
                   rows: Sequence[np.ndarray]):
    """As ``NvjpegDecoder.resize_batch``, from numpy ``(H, W, 3)`` arrays,
    on the model's JAX device."""
    import jax  # pylint: disable=import-outside-toplevel
    with jax.default_device(self._jax_device):
      return self._resizer.resize_arrays(
          [(p, turn, 'hwc') for p, turn in images] +
          [(r, 1, 'hwc') for r in rows],
          resized=[False] * len(images) + [True] * len(rows))


def make_decoder(device_index: int, config: imaging.DecodeConfig,
                 batch_size: int, on_cpu: bool, jax_device=None):
  """The decoder for one replica's device (``PillowStandIn`` on CPU).

  Args:
    device_index: The CUDA device's index.
    config: The decode rules.
    batch_size: Rows of the model's batch.
    on_cpu: Use the stand-in (tests on machines without a GPU).
    jax_device: The stand-in's JAX device (the model replica's).
  """
  if on_cpu:
    return PillowStandIn(config, batch_size, jax_device)
  return NvjpegDecoder(device_index, config, batch_size)
