"""The CPU path's crop/resize rule as two small weight matrices.

``imaging.decode_image`` ends with Pillow's
``image.resize((S, S), BILINEAR, box=crop_box(...))`` on 8-bit RGB. The
GPU path decodes at full size and must give the same pixels, so this
module reproduces Pillow 12.3's resampler (``libImaging/Resample.c``) as
dense matrices that a GPU applies as batched matrix products; images of
one size share one plan. ``axis_taps`` gives the same coefficients as
taps (source index, 22-bit integer), which ``ragged_resize`` applies to
batches of mixed sizes.

What Pillow does, and what is mirrored here:

* The box reaches C as four ``float`` (float32) values; the scale is
  ``(double)(box_end - box_start) / out_size``, the subtraction itself in
  float32.
* Each axis gets its own coefficients (``precompute_coeffs``): a triangle
  filter of support ``max(scale, 1)`` (antialiasing when shrinking) around
  ``center = box_start + (i + 0.5) * scale``, cut to the image, normalised
  by its sum, then rounded to 22-bit fixed point
  (``normalize_coeffs_8bpc``). The matrices hold those fixed-point values
  divided by 2**22, which float32 represents exactly.
* Each pass sums ``pixel * coefficient``, adds one half and floors (the
  fixed-point ``+ 1 << 21`` then ``>> 22``), clipping to 0..255; the
  horizontal pass runs first, on the source rows the vertical pass reads
  only, and its result is stored as 8-bit before the vertical pass.
* Once the coefficients are fixed, a pass is integer arithmetic that
  float64 carries exactly: ``apply_plan`` in float64 matches Pillow bit
  for bit (see its docstring for why not float32).
* Images more than 100 times taller than wide (and shrinking vertically)
  go through ``Image.resize``'s other branch: vertical pass first, then
  horizontal. The order matters because of the rounding in between.
* A pass is left out when it would copy (same size, whole-pixel box:
  ``need_horizontal`` in C, the ``ImagingCrop`` shortcut for an integer box
  of exactly the output size, or ``Image.resize`` returning a copy). Those
  passes are exact identities in this arithmetic, so skipping them only
  saves time; the plan marks them so that a caller may.
"""
import math
from typing import NamedTuple, Tuple

import numpy as np

from transforms.decode import imaging

# libImaging/Resample.c: 8 bits of result, 2 for overflow and sign.
PRECISION_BITS = 32 - 8 - 2
_ONE = float(1 << PRECISION_BITS)

# Image.resize takes its vertical-first branch when height > width * this.
_TALL_RATIO = 100


def _bilinear(x: np.ndarray) -> np.ndarray:
  """Pillow's ``bilinear_filter``: a triangle of support 1."""
  x = np.abs(x)
  return np.where(x < 1.0, 1.0 - x, 0.0)


def _coefficients(in_size: int, box_start: float, box_end: float,
                  out_size: int) -> Tuple[np.ndarray, np.ndarray]:
  """Pillow's BILINEAR taps for one axis: the one computation behind
  ``axis_taps`` and ``axis_weights``.

  Follows ``precompute_coeffs`` and ``normalize_coeffs_8bpc`` operation by
  operation (same float32/float64 steps, same summation order), so the
  fixed-point coefficients are bit for bit Pillow's.

  Returns:
    ``(index, fixed)``, both ``(out_size, K)`` with K the largest tap
    count: int64 source indices and the 22-bit coefficients (as float64
    whole numbers). An unused tap repeats its output's first index with
    coefficient 0, so every index is one that output reads anyway.
  """
  # The box arrives in C as float; the difference is taken in float too.
  in0 = np.float32(box_start)
  scale = float(np.float32(box_end) - in0) / out_size
  filterscale = max(scale, 1.0)
  support = 1.0 * filterscale  # BILINEAR's support is 1.0
  ksize = int(math.ceil(support)) * 2 + 1

  center = float(in0) + (np.arange(out_size, dtype=np.float64) + 0.5) * scale
  # C's (int) cast truncates toward zero; astype does the same.
  xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)
  xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size)
  count = xmax - xmin

  # Taps past the largest count are unused everywhere: C sets them to 0
  # (they add nothing to the totals below), so they are left out here.
  width = max(int(count.max()), 1)
  taps = np.arange(min(ksize, width))
  index = xmin[:, None] + taps[None, :]
  used = taps[None, :] < count[:, None]
  weights = np.where(
      used, _bilinear((index - center[:, None] + 0.5) * (1.0 / filterscale)),
      0.0)
  # Summed tap by tap, in C's order: np.sum's pairwise order could differ
  # in the last bit and move a coefficient across a rounding boundary.
  # accumulate adds each column to the sum of those before it, in turn.
  total = np.add.accumulate(weights, axis=1)[:, -1]
  weights = np.where(total[:, None] != 0.0,
                     weights / np.where(total == 0.0, 1.0, total)[:, None],
                     weights)
  # normalize_coeffs_8bpc; bilinear coefficients are never negative, for
  # which C would round away from zero instead.
  fixed = np.floor(0.5 + weights * _ONE)
  return np.where(used, index, xmin[:, None]), fixed


def axis_taps(in_size: int, box_start: float, box_end: float,
              out_size: int) -> Tuple[np.ndarray, np.ndarray]:
  """Pillow's BILINEAR coefficients for one axis, as taps.

  Output ``o`` of a pass is
  ``clip((2**21 + sum_t pixel[index[o, t]] * coefficients[o, t]) >> 22,
  0, 255)``, Pillow's 8-bit pass exactly, in int32 and in any order of
  summation: the coefficients are >= 0 and sum to about 2**22, so no
  partial sum reaches 2**31.

  Args:
    in_size: Source length along the axis, in pixels.
    box_start: Start of the source box along the axis (may be fractional).
    box_end: End of the source box along the axis.
    out_size: Output length along the axis.

  Returns:
    ``(index, coefficients)``, both int32 ``(out_size, K)``, K the largest
    tap count of this axis: the source index each tap reads (in
    ``[0, in_size)``) and its 22-bit fixed-point coefficient. Unused taps
    have coefficient 0 and repeat an index their output reads anyway.
  """
  index, fixed = _coefficients(in_size, box_start, box_end, out_size)
  return index.astype(np.int32), fixed.astype(np.int32)


def axis_weights(in_size: int, box_start: float, box_end: float,
                 out_size: int) -> Tuple[int, np.ndarray]:
  """Pillow's BILINEAR coefficients for one axis, as a dense matrix.

  The taps of ``axis_taps``, spread out.

  Args:
    in_size: Source length along the axis, in pixels.
    box_start: Start of the source box along the axis (may be fractional).
    box_end: End of the source box along the axis.
    out_size: Output length along the axis.

  Returns:
    ``(first, weights)``: the first source index any output reads, and a
    float32 ``(out_size, span)`` matrix over source indices
    ``[first, first + span)``, each entry a 22-bit fixed-point coefficient
    divided by 2**22 (exact in float32). ``span`` covers only the indices
    some output reads, so a crop costs its own width, not the image's.
  """
  index, fixed = _coefficients(in_size, box_start, box_end, out_size)
  # Unused taps repeat an index of their row, so the extremes of ``index``
  # are those of the used taps.
  first = int(index.min())
  span = int(index.max()) + 1 - first
  matrix = np.zeros((out_size, span), dtype=np.float32)
  rows = np.broadcast_to(np.arange(out_size)[:, None], index.shape)
  # Adding (not assigning): an unused tap adds its 0 to a used entry.
  np.add.at(matrix, (rows, index - first), (fixed / _ONE).astype(np.float32))
  return first, matrix


def vertical_first(width: int, height: int,
                   config: imaging.DecodeConfig) -> bool:
  """Whether Pillow resizes this (upright) image vertically first.

  ``Image.resize`` does for images over 100 times taller than wide that
  shrink vertically.
  """
  return height > width * _TALL_RATIO and config.image_size < height


class ResizePlan(NamedTuple):
  """How to turn one source size into the model's square input.

  Attributes:
    top: First source row the resize reads.
    rows: float32 ``(S, span_h)`` weights of the vertical pass over source
      rows ``[top, top + span_h)``.
    left: First source column the resize reads.
    cols: float32 ``(S, span_w)`` weights of the horizontal pass over
      source columns ``[left, left + span_w)``.
    skip_vertical: ``rows`` is an exact identity (rows ``top .. top+S-1``
      taken as they are); the pass may be left out, as Pillow does.
    skip_horizontal: The same for ``cols``.
    vertical_first: Run the vertical pass before the horizontal one
      (Pillow does for images over 100 times taller than wide).
  """
  top: int
  rows: np.ndarray
  left: int
  cols: np.ndarray
  skip_vertical: bool
  skip_horizontal: bool
  vertical_first: bool


def _is_identity(weights: np.ndarray) -> bool:
  """Whether output ``i`` is source ``first + i`` with weight exactly 1."""
  size = weights.shape[0]
  if weights.shape[1] < size:
    return False
  expected = np.zeros_like(weights)
  expected[np.arange(size), np.arange(size)] = 1.0
  return bool(np.array_equal(weights, expected))


def resize_plan(width: int, height: int,
                config: imaging.DecodeConfig) -> ResizePlan:
  """The plan that reproduces ``imaging.decode_image``'s resize.

  Args:
    width: Width of the decoded RGB image (after EXIF orientation).
    height: Its height.
    config: Size and resize policy, as for ``imaging.decode_image``.

  Returns:
    A ``ResizePlan`` for every image of this size and config.
  """
  size = config.image_size
  left_edge, top_edge, right_edge, bottom_edge = imaging.crop_box(
      width, height, config)
  top, rows = axis_weights(height, top_edge, bottom_edge, size)
  left, cols = axis_weights(width, left_edge, right_edge, size)
  # Pillow skips a pass only where it would copy; every such pass has an
  # identity matrix here (and an identity pass changes no pixel), so
  # testing the matrix covers all of Pillow's shortcuts at once.
  return ResizePlan(
      top=top, rows=rows, left=left, cols=cols,
      skip_vertical=_is_identity(rows),
      skip_horizontal=_is_identity(cols),
      vertical_first=vertical_first(width, height, config))


def _round_to_uint8_range(values: np.ndarray) -> np.ndarray:
  """Pillow's ``clip8``: add one half, floor, clip; stays floating point."""
  return np.clip(np.floor(values + 0.5), 0.0, 255.0)


def apply_plan(pixels: np.ndarray, plan: ResizePlan,
               dtype=np.float64) -> np.ndarray:
  """Resizes one image by ``plan``; the reference for the GPU version.

  A batched version (torch, ``x`` of shape ``(N, H, W, 3)``, all images of
  the plan's source size) gives Pillow's pixels exactly if it does this,
  in this order:

  1. ``x = x[:, top:top + span_h, left:left + span_w, :].double()``
     (``span_h, span_w = rows.shape[1], cols.shape[1]``); the matrices
     go to float64 too (exact: they hold 22-bit fixed-point values).
  2. Horizontal pass: ``x = einsum('nhwc,ow->nhoc', x, cols)``, then
     ``x = (x + 0.5).floor().clamp(0, 255)``, still float64.
  3. Vertical pass: ``x = einsum('nhwc,oh->nowc', x, rows)``, then
     ``x = (x + 0.5).floor().clamp(0, 255)``.
     With ``vertical_first``, step 3 comes before step 2.
  4. ``x.to(torch.uint8)`` (exact: the values are whole numbers).

  A pass marked ``skip_*`` may be replaced by taking the first S rows (or
  columns) of the window: it is an identity. Do not fold the two matrices
  into one product or round only once: Pillow stores the horizontal result
  as 8-bit, and that rounding is part of its output.

  Why float64: a pass sums ``pixel * k / 2**22`` with ``k`` a 22-bit
  integer, so an exact sum needs about 31 significant bits. float64 holds
  every product and partial sum exactly, in any order of summation, so the
  result is Pillow's bit for bit however the GPU tiles the product. float32
  (24 bits) rounds, and that matters more than one would guess: the scale
  is a ratio of integers, so sample positions repeat with a short period
  and many exact sums lie a few 2**-22 units beside a half, where float32
  cannot tell the side. Measured on the test photos: 0.1-0.2% of values
  differ, up to 3% for some upscales, a few by 2. TF32 and bfloat16 are
  worse still.

  Args:
    pixels: ``uint8`` array of shape ``(H, W, 3)`` of the plan's size.
    plan: From ``resize_plan`` for this ``(W, H)``.
    dtype: Floating type of the arithmetic. float64 is exact; float32 is
      there to measure what it costs in accuracy.

  Returns:
    ``uint8`` array of shape ``(S, S, 3)``.
  """
  span_h, span_w = plan.rows.shape[1], plan.cols.shape[1]
  window = pixels[plan.top:plan.top + span_h, plan.left:plan.left + span_w]
  x = window.astype(dtype)

  def horizontal(x):
    if plan.skip_horizontal:
      return x[:, :plan.cols.shape[0]]
    # (S, w) @ (w, h * 3) -> (h, S, 3) in one product: a product per
    # source row costs a BLAS call each, which a busy machine makes slow.
    height, width, channels = x.shape
    out = np.matmul(plan.cols.astype(dtype),
                    np.moveaxis(x, 1, 0).reshape(width, -1))
    return _round_to_uint8_range(
        out.reshape(-1, height, channels).transpose(1, 0, 2))

  def vertical(x):
    if plan.skip_vertical:
      return x[:plan.rows.shape[0]]
    height, width, channels = x.shape
    out = np.matmul(plan.rows.astype(dtype), x.reshape(height, -1))
    return _round_to_uint8_range(out.reshape(-1, width, channels))

  if plan.vertical_first:
    x = horizontal(vertical(x))
  else:
    x = vertical(horizontal(x))
  return x.astype(np.uint8)
