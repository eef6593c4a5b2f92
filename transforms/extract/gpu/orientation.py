"""EXIF orientation as flips and a transpose, for decoders that ignore it.

nvJPEG through ``torchvision.io.decode_jpeg`` on CUDA returns the stored
pixels: ``apply_exif_orientation`` works on the CPU only (its docstring
says so, and an H200 run confirmed it). The CPU path applies Pillow's
``ImageOps.exif_transpose``; ``OPS`` says, for each orientation value,
which axis operations give the same pixels, in order. ``jpeg_header``
reads the value the way Pillow does.
"""
from typing import Dict, Tuple

import numpy as np

# 'transpose' swaps rows and columns; 'flip_rows' reverses the order of
# the rows (upside down); 'flip_columns' that of the columns (mirror).
OPS: Dict[int, Tuple[str, ...]] = {
    1: (),
    2: ('flip_columns',),                           # FLIP_LEFT_RIGHT
    3: ('flip_rows', 'flip_columns'),               # ROTATE_180
    4: ('flip_rows',),                              # FLIP_TOP_BOTTOM
    5: ('transpose',),                              # TRANSPOSE
    6: ('transpose', 'flip_columns'),               # ROTATE_270
    7: ('transpose', 'flip_rows', 'flip_columns'),  # TRANSVERSE
    8: ('transpose', 'flip_rows'),                  # ROTATE_90
}


def swaps_axes(orientation: int) -> bool:
  """Whether the upright image's width is the stored height."""
  return 'transpose' in OPS.get(orientation, ())


def apply_numpy(pixels: np.ndarray, orientation: int) -> np.ndarray:
  """``OPS`` on an ``(H, W, C)`` array (views, no copy)."""
  for op in OPS.get(orientation, ()):
    if op == 'transpose':
      pixels = pixels.swapaxes(0, 1)
    elif op == 'flip_rows':
      pixels = pixels[::-1]
    else:
      pixels = pixels[:, ::-1]
  return pixels


def apply_torch(image, orientation: int):
  """``OPS`` on a torch ``(C, H, W)`` tensor."""
  for op in OPS.get(orientation, ()):
    if op == 'transpose':
      image = image.transpose(-1, -2)
    elif op == 'flip_rows':
      image = image.flip(-2)
    else:
      image = image.flip(-1)
  return image
