"""Pillow's crop/resize for a whole batch of images of different sizes.

``resample`` reproduces ``imaging.decode_image``'s resize (Pillow 12.3,
BILINEAR with a crop box) one image size at a time, as dense matrices.
Here the same arithmetic runs for a ragged batch in two gathers-and-sums
on the device, whatever the sizes: each output pixel reads its few
filter taps, so the cost follows the filter (a few taps a pixel), not
``H x W x S`` multiply-adds as a dense product does.

The batch lives in one flat ``uint8`` buffer holding every image's stored
pixels back to back (nvJPEG's ``(3, H, W)`` tensors concatenated by
torch, CPU rows, anything contiguous). The host describes each image by a
``Source`` and ``pack`` turns the descriptions into small int32 tables
(``Tables``) of work items, each ``CHUNK_TAPS`` taps of one output line:

* Horizontal pass, into the "intermediate rows": every upright source row
  that some output row of its image reads, all images' one after the
  other. An item has the flat address of its source row and a chunk: per
  output column and tap, the address offset of the column read and the
  tap's coefficient.
* Vertical pass, into the output rows: an item has the intermediate rows
  its taps read and their coefficients.

An output whose filter has more taps than a chunk (a large image shrunk a
lot: up to ~50 taps for 4,000 pixels) also gets a slot holding the rest,
whose int32 sum is added before rounding; only those outputs pay for the
batch's largest filter. Padding every image to the batch's largest tap
count instead did 6.7 times the work the filter needs on ImageNet-like
batches (a few large images in each).

EXIF orientation is folded into the addresses: the upright pixel
``(y, x)`` sits at ``base + y * row_stride + x * col_stride`` of the
stored array, strides that may be negative or swapped (``_view``), so no
image is turned or copied.

The arithmetic is Pillow's 8-bit pass (``ImagingResampleHorizontal_8bpc``
and its vertical twin) as it is in C: ``ss = 1 << 21`` plus
``pixel * k`` per tap in int32, then ``clip(ss >> 22, 0, 255)`` stored as
uint8 before the other pass. Integer sums are exact in any order, so the
result is Pillow's bit for bit on any device.

Sizes are rounded up to buckets (``bucketed``), and ``RaggedResize``
reuses earlier batches' sizes where they fit, so that ``resize``, jitted,
compiles for a handful of shapes over a job.

On an H200 (jax 0.11.2), a batch of 256 ImageNet-like sizes (6% of them
EXIF-turned) takes 1.0 ms (center-crop) or 1.8 ms (squash); 1.5 to 2.5 ms
with half of them turned (an upright row of a turned 'chw' image is a
stored column, whose reads do not coalesce); 0.5 to 0.7 s to compile a
shape. The output is bit for bit that of JAX's CPU backend and Pillow.
Layouts that summed partial sums with XLA's scatter-add took 1.1 to 6 ms.

Not covered: images over 100 times taller than wide, which Pillow resizes
vertically first (``resample.vertical_first``); ``supported`` says which,
so that a caller sends those to the CPU path.

How the GPU decoder uses it, with torch tensors from nvJPEG (``(3, H, W)``,
stored orientation: do not apply the orientation in torch, which makes
non-contiguous views) and numpy rows from the CPU path (``(S, S, 3)``)::

  resizer = ragged_resize.RaggedResize(config, batch_size)
  # Before decoding: resizer.supported(width, height, orientation) for
  # each JPEG; the others go to the CPU path.
  sources, total = ragged_resize.back_to_back(
      [t.shape for t in tensors] + [r.shape for r in rows],
      orientations + [1] * len(rows),
      ['chw'] * len(tensors) + ['hwc'] * len(rows),
      resized=[False] * len(tensors) + [True] * len(rows))
  packed = resizer.pack(sources)          # host, ~µs per image
  flat = torch.empty(packed.flat_size, dtype=torch.uint8, device=device)
  torch.cat([t.reshape(-1) for t in tensors] +
            [torch.from_numpy(r).reshape(-1).to(device) for r in rows],
            out=flat[:total])
  torch.cuda.current_stream(device).synchronize()  # JAX has its own stream
  batch = resizer.run(jax.dlpack.from_dlpack(flat), packed)
  # batch: (batch_size, S, S, 3) uint8, rows in the order of ``sources``,
  # zeros after them.
"""
import functools
import math
import threading
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from transforms.decode import imaging
from transforms.extract.gpu import orientation as orientation_ops
from transforms.extract.gpu import resample

LAYOUTS = ('chw', 'hwc')
_CHANNELS = 3
_HALF = 1 << (resample.PRECISION_BITS - 1)
# Addresses are int32 on the device.
MAX_FLAT_BYTES = 1 << 31

# Taps of a main work item. Most ImageNet-like images need 3 to 6 per axis
# (6 up to a side of about 600 pixels), a few large ones 10 to 50, which
# go to slots. On an H200, 6 beat 4 and 8: 1.0 ms a batch against 1.3 and
# 1.3 (center-crop), 1.8 against 4.7 and 1.8 (squash).
CHUNK_TAPS = 6

# Bucket minima and steps per octave. The flat buffer's length and the
# chunk tables cost only memory (nothing reads their padding), so powers
# of two. Padding rows cost like real ones, so quarter octaves for them
# (at most 25% wasted); the slots, a fifth of the work or less but varying
# more (a few large images make them), in powers of two.
_FLAT_MIN, _FLAT_STEPS = 1 << 20, 1
_ROWS_MIN, _ROWS_STEPS = 1 << 10, 4
_SLOTS_MIN, _SLOTS_STEPS = 1 << 8, 1
_SLOT_CHUNKS_MIN, _SLOT_CHUNKS_STEPS = 1, 1
_CHUNKS_MIN, _CHUNKS_STEPS = 1 << 6, 1


class Source(NamedTuple):
  """One image of a batch, as it is stored in the flat buffer.

  Attributes:
    height: Rows of the stored array (before EXIF orientation).
    width: Its columns.
    orientation: EXIF orientation 1..8 (``orientation.OPS``; other values
      leave the image as it is, as there). The resize applies to the
      upright image, ``width x height`` swapped for 5..8.
    layout: ``'chw'``, a contiguous ``(3, height, width)`` array (torch,
      nvJPEG), or ``'hwc'``, a contiguous ``(height, width, 3)`` one.
    offset: Byte offset of the array in the flat buffer.
    resized: Already the model's input (``(S, S)``, upright, a CPU row):
      passed through unchanged, ``orientation`` ignored.
  """
  height: int
  width: int
  orientation: int = 1
  layout: str = 'chw'
  offset: int = 0
  resized: bool = False

  @property
  def nbytes(self) -> int:
    return self.height * self.width * _CHANNELS


class Tables(NamedTuple):
  """What ``resize`` reads besides the pixels: int32 arrays.

  Both passes are made of work items of ``T = CHUNK_TAPS`` taps of one
  output line each (unused taps have coefficient 0). Every output line
  has a main item, its first ``T`` taps, at a fixed place. A line whose
  filter has more taps also has a slot, which holds the rest (up to a
  bucketed count, static); its int32 sum is added to the main item's
  before rounding. Slot 0 is all zero, for the lines without one. So no
  line pays for the batch's largest filter but those that need it, and
  nothing is scattered (summing extra items with XLA's scatter-add made
  the whole 10% to 60% slower on an H200). Padding entries are all zero:
  they read address 0 (or intermediate row 0) with coefficient 0.

  ``R``, ``P``, ``M``, ``Q``, ``N`` and ``C`` are bucketed counts; ``B``
  is the batch size, ``S`` the model's input side.

  Horizontal pass, from the flat buffer to the ``R`` intermediate rows
  (every upright source row some output row reads, image after image):

  Attributes:
    row_base: ``(R,)`` flat address of upright pixel ``(row, x=0,
      channel 0)`` of each intermediate row's source row.
    row_chunk: ``(R,)`` its main item's chunk: which image and which
      ``T`` of its taps (chunk 0 is all zero, for padding).
    row_slot: ``(R,)`` its slot, or 0.
    slot_base: ``(P,)`` the source row address of each slot's row.
    slot_chunks: ``(P, M)`` its other chunks (0 past the image's).
    x_offset: ``(C, S, T)`` per chunk, output column and tap, the address
      offset of the column read (``column * col_stride``).
    x_coef: ``(C, S, T)`` the taps' 22-bit coefficients.
    channel_stride: ``(C,)`` address step from one channel to the next.

  Vertical pass, from the intermediate rows to the ``B * S`` output rows
  (``image * S + row``):

  Attributes:
    line_rows: ``(B * S, T)`` the intermediate rows each output row's
      main item reads.
    line_coef: ``(B * S, T)`` their coefficients.
    line_slot: ``(B * S,)`` its slot, or 0.
    slot_rows: ``(Q, N * T)`` the rows each slot's other taps read.
    slot_coef: ``(Q, N * T)`` their coefficients.
  """
  row_base: np.ndarray
  row_chunk: np.ndarray
  row_slot: np.ndarray
  slot_base: np.ndarray
  slot_chunks: np.ndarray
  x_offset: np.ndarray
  x_coef: np.ndarray
  channel_stride: np.ndarray
  line_rows: np.ndarray
  line_coef: np.ndarray
  line_slot: np.ndarray
  slot_rows: np.ndarray
  slot_coef: np.ndarray


class Capacity(NamedTuple):
  """The sizes of a packed batch that vary: what ``resize`` compiles for.

  Attributes:
    rows: Intermediate rows (``R``).
    slots: Slots of the horizontal pass (``P``), slot 0 included.
    slot_chunks: Chunks of each (``M``).
    line_slots: Slots of the vertical pass (``Q``), slot 0 included.
    line_slot_chunks: Chunks of ``T`` taps of each (``N``).
    chunks: Rows of the chunk tables (``C``), the null chunk included.
    flat_size: Length of the flat buffer.
  """
  rows: int
  slots: int
  slot_chunks: int
  line_slots: int
  line_slot_chunks: int
  chunks: int
  flat_size: int

  def holds(self, need: 'Capacity') -> bool:
    return all(mine >= theirs for mine, theirs in zip(self, need))

  def cost(self) -> int:
    """Relative device time, in chunks of ``T`` taps for ``S x 3``
    outputs (the main vertical items are the same for every batch);
    chunk tables and the flat buffer are memory only."""
    return (self.rows + self.slots * self.slot_chunks +
            self.line_slots * self.line_slot_chunks)


class Packed(NamedTuple):
  """A packed batch.

  Attributes:
    tables: For ``resize``.
    batch_size: Rows of the output.
    capacity: The sizes ``tables`` and the flat buffer are padded to.
    end: Where the last image ends in the flat buffer.
    count: Real images; rows ``count..`` of the output are zeros.
  """
  tables: Tables
  batch_size: int
  capacity: Capacity
  end: int
  # Shadows tuple.count; renaming the field would change the public type.
  count: int  # type: ignore[assignment]

  @property
  def flat_size(self) -> int:
    """Length to give the flat buffer; bytes past ``end`` are never read."""
    return self.capacity.flat_size


class _Taps(NamedTuple):
  """The resize of one upright size, cut into chunks of ``T`` taps.

  The arrays are int32 and contiguous, for fast concatenation in
  ``_build``; chunk 0 of each axis holds its main items.
  """
  top: int             # first upright row read
  span: int            # rows read: [top, top + span)
  x_index: np.ndarray  # (x chunks, S, T) upright columns
  x_coef: np.ndarray   # (x chunks, S, T)
  y_index: np.ndarray  # (y chunks, S, T) upright rows, relative to top
  y_coef: np.ndarray   # (y chunks, S, T)


def _bucket(n: int, minimum: int, steps: int) -> int:
  """Smallest ``ceil(2**k * (1 + j / steps))`` (``0 <= j < steps``) that is
  at least ``max(n, minimum)``."""
  n = max(n, minimum)
  octave = 1 << (n.bit_length() - 1)
  for j in range(steps + 1):
    candidate = math.ceil(octave * (steps + j) / steps)
    if candidate >= n:
      return candidate
  raise AssertionError('unreachable: j = steps gives 2 * octave > n')


def _upright_size(width: int, height: int, turn: int) -> Tuple[int, int]:
  if orientation_ops.swaps_axes(turn):
    return height, width
  return width, height


def supported(width: int, height: int, orientation: int,
              config: imaging.DecodeConfig) -> bool:
  """Whether ``pack`` takes an image; the others go to the CPU path.

  Args:
    width: Stored width (as in the JPEG header, before orientation).
    height: Stored height.
    orientation: EXIF orientation.
    config: Size and resize policy.

  Returns:
    False for empty images and for those Pillow resizes vertically first
    (upright height over 100 times the width), an order not done here.
  """
  if width < 1 or height < 1:
    return False
  upright_w, upright_h = _upright_size(width, height, orientation)
  return not resample.vertical_first(upright_w, upright_h, config)


def _chunks(index: np.ndarray, coef: np.ndarray,
            taps: int) -> Tuple[np.ndarray, np.ndarray]:
  """``(S, K)`` taps as contiguous int32 ``(ceil(K / taps), S, taps)``
  chunks; the padding taps repeat index 0 of their row with coefficient
  0."""
  size, count = coef.shape
  chunks = -(-count // taps)
  padded_index = np.empty((chunks * taps, size), np.int32)
  padded_index[:count] = index.T
  padded_index[count:] = index[:, 0]
  padded_coef = np.zeros((chunks * taps, size), np.int32)
  padded_coef[:count] = coef.T

  def cut(taps_by_output):
    return np.ascontiguousarray(
        taps_by_output.reshape(chunks, taps, size).transpose(0, 2, 1))

  return cut(padded_index), cut(padded_coef)


@functools.lru_cache(maxsize=8192)
def _axis_chunks(in_size: int, box_start: float, box_end: float,
                 out_size: int, taps: int) -> Tuple[np.ndarray, np.ndarray]:
  """``resample.axis_taps`` in chunks, cached per axis: images of many
  sizes share one axis (a landscape image's vertical taps depend on its
  height only), so this cache hits where the per-size one misses."""
  index, coef = resample.axis_taps(in_size, box_start, box_end, out_size)
  return _chunks(index, coef, taps)


def _combine(x_chunks: Tuple[np.ndarray, np.ndarray],
             y_chunks: Tuple[np.ndarray, np.ndarray]) -> _Taps:
  x_index, x_coef = x_chunks
  y_index, y_coef = y_chunks
  top = int(y_index.min())
  span = int(y_index.max()) + 1 - top
  return _Taps(top, span, x_index, x_coef, y_index - top, y_coef)


@functools.lru_cache(maxsize=4096)
def _taps(width: int, height: int, config: imaging.DecodeConfig,
          taps: int) -> _Taps:
  """The taps for an upright ``width x height`` image (cached: a batch has
  many repeated sizes)."""
  size = config.image_size
  left, top, right, bottom = imaging.crop_box(width, height, config)
  return _combine(_axis_chunks(width, left, right, size, taps),
                  _axis_chunks(height, top, bottom, size, taps))


@functools.lru_cache(maxsize=8)
def _identity_taps(size: int, taps: int) -> _Taps:
  """One tap of coefficient 2**22 per output: the pixel itself."""
  index = np.arange(size, dtype=np.int32)[:, None]
  coef = np.full((size, 1), 1 << resample.PRECISION_BITS, np.int32)
  chunks = _chunks(index, coef, taps)
  return _combine(chunks, chunks)


def _view(source: Source) -> Tuple[int, int, int, int, int, int]:
  """Where the upright image's pixels are in the flat buffer.

  Returns:
    ``(base, row_stride, col_stride, channel_stride, height, width)``:
    upright pixel ``(y, x, c)`` is at
    ``base + y * row_stride + x * col_stride + c * channel_stride``, and
    the upright image is ``height x width``. The operations of
    ``orientation.OPS`` act on strides as numpy's views do.
  """
  height, width = source.height, source.width
  if source.layout == 'chw':
    row, col, channel = width, 1, height * width
  else:
    row, col, channel = width * _CHANNELS, _CHANNELS, 1
  base = source.offset
  turn = 1 if source.resized else source.orientation
  for op in orientation_ops.OPS.get(turn, ()):
    if op == 'transpose':
      height, width, row, col = width, height, col, row
    elif op == 'flip_rows':
      base += (height - 1) * row
      row = -row
    else:
      base += (width - 1) * col
      col = -col
  return base, row, col, channel, height, width


def _check(index: int, source: Source, config: imaging.DecodeConfig) -> None:
  if source.layout not in LAYOUTS:
    raise ValueError(f'image {index}: layout must be one of {LAYOUTS}, not '
                     f'{source.layout!r}')
  if source.height < 1 or source.width < 1 or source.offset < 0:
    raise ValueError(f'image {index}: bad size or offset {source}')
  size = config.image_size
  if source.resized and (source.height, source.width) != (size, size):
    raise ValueError(f'image {index}: marked resized but is '
                     f'{source.height}x{source.width}, not {size}x{size}')


class _Prepared(NamedTuple):
  """A batch's images, checked, with their views and taps."""
  views: np.ndarray  # (n, 6) int64, ``_view`` of each
  taps: List[_Taps]
  end: int
  size: int
  chunk_taps: int


def _prepare(sources: Sequence[Source], config: imaging.DecodeConfig,
             batch_size: int, chunk_taps: int) -> _Prepared:
  """Checks a batch's sources and looks up their taps (see ``pack``)."""
  count = len(sources)
  if count > batch_size:
    raise ValueError(f'{count} images for a batch of {batch_size}')
  size = config.image_size
  refused, views, taps = [], [], []
  end = 0
  for index, source in enumerate(sources):
    _check(index, source, config)
    view = _view(source)
    if source.resized:
      taps.append(_identity_taps(size, chunk_taps))
    elif resample.vertical_first(view[5], view[4], config):
      refused.append(index)
    else:
      taps.append(_taps(view[5], view[4], config, chunk_taps))
    views.append(view)
    end = max(end, source.offset + source.nbytes)
  if refused:
    raise ValueError(
        f'images {refused} are over 100 times taller than wide: Pillow '
        'resizes them vertically first, which this module does not; decode '
        'them on the CPU (check ragged_resize.supported before decoding)')
  if end > MAX_FLAT_BYTES:
    raise ValueError(f'{end} bytes of images: more than int32 addresses '
                     'reach; split the batch')
  return _Prepared(np.array(views, np.int64).reshape(-1, 6), taps, end, size,
                   chunk_taps)


def _need(prepared: _Prepared) -> Capacity:
  """The sizes a batch needs."""
  rows = slots = line_slots = 0
  slot_chunks = line_slot_chunks = 0
  chunks = 1
  for t in prepared.taps:
    rows += t.span
    chunks += t.x_coef.shape[0]
    if t.x_coef.shape[0] > 1:
      slots += t.span
      slot_chunks = max(slot_chunks, t.x_coef.shape[0] - 1)
    if t.y_coef.shape[0] > 1:
      line_slots += t.y_coef.shape[1]
      line_slot_chunks = max(line_slot_chunks, t.y_coef.shape[0] - 1)
  return Capacity(rows=rows, slots=slots + 1, slot_chunks=slot_chunks,
                  line_slots=line_slots + 1,
                  line_slot_chunks=line_slot_chunks, chunks=chunks,
                  flat_size=prepared.end)


def bucketed(need: Capacity) -> Capacity:
  """``need`` rounded up to the buckets."""
  return Capacity(
      rows=_bucket(need.rows, _ROWS_MIN, _ROWS_STEPS),
      slots=_bucket(need.slots, _SLOTS_MIN, _SLOTS_STEPS),
      slot_chunks=_bucket(need.slot_chunks, _SLOT_CHUNKS_MIN,
                          _SLOT_CHUNKS_STEPS),
      line_slots=_bucket(need.line_slots, _SLOTS_MIN, _SLOTS_STEPS),
      line_slot_chunks=_bucket(need.line_slot_chunks, _SLOT_CHUNKS_MIN,
                               _SLOT_CHUNKS_STEPS),
      chunks=_bucket(need.chunks, _CHUNKS_MIN, _CHUNKS_STEPS),
      flat_size=min(_bucket(need.flat_size, _FLAT_MIN, _FLAT_STEPS),
                    MAX_FLAT_BYTES))


def _build(prepared: _Prepared, capacity: Capacity,
           batch_size: int) -> Packed:
  """The tables of a prepared batch, padded to ``capacity``.

  Per-image values are spread over rows and slots with ``np.repeat``, and
  the cached per-size arrays joined with one ``np.concatenate`` each: no
  Python loop per row, and per image only list building (and a copy per
  image whose vertical filter needs a slot: a few large ones).
  """
  taps, size, chunk_taps = prepared.taps, prepared.size, prepared.chunk_taps
  count = len(taps)
  views = prepared.views
  base, row_stride = views[:, 0], views[:, 1]
  col_stride, channel = views[:, 2], views[:, 3]
  top = np.array([t.top for t in taps], np.int64)
  spans = np.array([t.span for t in taps], np.int64)
  row_start = np.cumsum(spans) - spans  # each image's first row
  x_chunks = np.array([t.x_coef.shape[0] for t in taps], np.int64)
  y_chunks = np.array([t.y_coef.shape[0] for t in taps], np.int64)
  first_chunk = 1 + np.cumsum(x_chunks) - x_chunks  # chunk 0 is null
  rows = int(spans.sum())
  image_of_row = np.repeat(np.arange(count), spans)
  row_address = (np.repeat(base + top * row_stride, spans) +
                 (np.arange(rows) - np.repeat(row_start, spans)) *
                 np.repeat(row_stride, spans))

  def zeros(*shape):
    return np.zeros(shape, np.int32)

  # Horizontal pass; the rows of images with more than one chunk get
  # slots 1, 2, ...
  row_base, row_chunk = zeros(capacity.rows), zeros(capacity.rows)
  row_slot = zeros(capacity.rows)
  row_base[:rows] = row_address
  row_chunk[:rows] = first_chunk[image_of_row]
  slotted = np.flatnonzero(x_chunks[image_of_row] > 1)
  row_slot[slotted] = np.arange(1, 1 + slotted.size)
  slot_base = zeros(capacity.slots)
  slot_chunks = zeros(capacity.slots, capacity.slot_chunks)
  slot_base[1:1 + slotted.size] = row_address[slotted]
  image = image_of_row[slotted]
  extra = np.arange(capacity.slot_chunks)
  slot_chunks[1:1 + slotted.size] = np.where(
      extra < (x_chunks[image] - 1)[:, None],
      first_chunk[image][:, None] + 1 + extra, 0)

  x_offset = zeros(capacity.chunks, size, chunk_taps)
  x_coef = zeros(capacity.chunks, size, chunk_taps)
  channel_stride = zeros(capacity.chunks)
  line_rows = zeros(batch_size * size, chunk_taps)
  line_coef = zeros(batch_size * size, chunk_taps)
  line_slot = zeros(batch_size * size)
  slot_rows = zeros(capacity.line_slots,
                    capacity.line_slot_chunks * chunk_taps)
  slot_coef = zeros(*slot_rows.shape)
  if count:
    last = 1 + int(x_chunks.sum())
    # int32 products: an offset stays inside its image, which int32
    # addresses reach.
    x_offset[1:last] = np.concatenate([t.x_index for t in taps]) * (
        np.repeat(col_stride.astype(np.int32), x_chunks)[:, None, None])
    x_coef[1:last] = np.concatenate([t.x_coef for t in taps])
    channel_stride[1:last] = np.repeat(channel, x_chunks)

    # Vertical pass: main items in output-row order; the output rows of
    # images with more than one chunk get slots 1, 2, ...
    shift = np.repeat(row_start.astype(np.int32), size)[:, None]
    line_rows[:count * size] = np.concatenate(
        [t.y_index[0] for t in taps]) + shift
    line_coef[:count * size] = np.concatenate([t.y_coef[0] for t in taps])
    slot = 1
    for index in np.flatnonzero(y_chunks > 1):
      t = taps[index]
      # (chunks - 1, S, T) -> (S, (chunks - 1) * T): an output row's taps.
      width = (t.y_coef.shape[0] - 1) * chunk_taps
      line_slot[index * size:(index + 1) * size] = np.arange(
          slot, slot + size)
      slot_rows[slot:slot + size, :width] = (
          t.y_index[1:].transpose(1, 0, 2).reshape(size, width) +
          row_start[index])
      slot_coef[slot:slot + size, :width] = (
          t.y_coef[1:].transpose(1, 0, 2).reshape(size, width))
      slot += size
  tables = Tables(row_base, row_chunk, row_slot, slot_base, slot_chunks,
                  x_offset, x_coef, channel_stride, line_rows, line_coef,
                  line_slot, slot_rows, slot_coef)
  return Packed(tables, batch_size, capacity, prepared.end, count)


def pack(sources: Sequence[Source], config: imaging.DecodeConfig,
         batch_size: int, chunk_taps: int = CHUNK_TAPS,
         capacity: Optional[Capacity] = None) -> Packed:
  """The tables that resize ``sources`` into one model batch.

  Host work only (numpy): per image a cached tap lookup, its strides and
  a few array copies; the per-row entries are built with ``np.repeat``.

  Args:
    sources: The images of the batch, in output order; at most
      ``batch_size``. Each must be ``supported`` (or ``resized``).
    config: Size and resize policy, as for ``imaging.decode_image``.
    batch_size: Rows of the output; those past ``len(sources)`` are zeros.
    chunk_taps: Taps per work item (``CHUNK_TAPS``); any value gives the
      same pixels, only the speed differs.
    capacity: Sizes to pad the tables to (default: what the batch needs,
      rounded up by ``bucketed``); ``RaggedResize`` picks them so that
      batches share compiled shapes.

  Returns:
    The ``Packed`` batch. Its ``flat_size`` is the length the flat buffer
    must have.

  Raises:
    ValueError: Too many images, a bad ``Source``, images that are not
      ``supported`` (their indices are in the message), a flat buffer
      too large for int32 addresses, or a ``capacity`` too small.
  """
  prepared = _prepare(sources, config, batch_size, chunk_taps)
  need = _need(prepared)
  if capacity is None:
    capacity = bucketed(need)
  elif not capacity.holds(need):
    raise ValueError(f'the batch needs {need}, more than {capacity}')
  return _build(prepared, capacity, batch_size)


# JAX is imported by the device functions when they are first traced, not
# with this module: the pipeline's graph names the GPU path's modules on
# the CPU path too, and a CPU install has no JAX.


def _to_uint8(sums):
  """Pillow's rounding and ``clip8`` of a fixed-point sum."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  shifted = jnp.right_shift(sums + _HALF, resample.PRECISION_BITS)
  return jnp.clip(shifted, 0, 255).astype(jnp.uint8)


def _horizontal_sums(flat, tables: Tables, base, chunk):
  """int32 ``(n, S, 3)`` sums of the ``T`` taps of chunk ``chunk[i]`` of
  the source row at ``base[i]``.

  Each element computes its own addresses from the small tables, one tap
  at a time (a static loop), so that XLA fuses the gathers and sums into
  one loop, with no ``n x S x T`` array of addresses.
  """
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  base = base[:, None, None]
  channel = (tables.channel_stride[chunk][:, None, None] *
             jnp.arange(_CHANNELS, dtype=jnp.int32))
  sums = None
  for tap in range(tables.x_coef.shape[2]):
    offset = tables.x_offset[:, :, tap][chunk][:, :, None]
    coef = tables.x_coef[:, :, tap][chunk][:, :, None]
    pixels = jnp.take(flat, base + offset + channel, mode='clip')
    term = pixels.astype(jnp.int32) * coef
    sums = term if sums is None else sums + term
  return sums


def _vertical_sums(intermediate, rows, coef):
  """int32 ``(n, S, 3)`` sums of vertical items (``rows``, ``coef`` of
  shape ``(n, taps)``)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  sums = None
  for tap in range(coef.shape[1]):
    picked = jnp.take(intermediate, rows[:, tap], axis=0, mode='clip')
    term = picked.astype(jnp.int32) * coef[:, tap, None, None]
    sums = term if sums is None else sums + term
  return sums


def _over_chunks(count: int, sums_of_chunk, shape):
  """The sum over ``count`` chunks of ``sums_of_chunk(k)``: a loop that is
  not unrolled, so that a batch whose largest image needs many chunks
  compiles no larger program (one fused loop body, ``count`` launches)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  if count == 1:
    return sums_of_chunk(0)
  return jax.lax.fori_loop(
      0, count, lambda k, sums: sums + sums_of_chunk(k),
      jnp.zeros(shape, jnp.int32))


def _horizontal(flat, tables: Tables):
  """``(R, S, 3)`` uint8: the intermediate rows (zeros past the real
  ones)."""
  size = tables.x_coef.shape[1]
  slots = _over_chunks(
      tables.slot_chunks.shape[1],
      lambda k: _horizontal_sums(flat, tables, tables.slot_base,
                                 tables.slot_chunks[:, k]),
      (tables.slot_base.shape[0], size, _CHANNELS))
  sums = _horizontal_sums(flat, tables, tables.row_base, tables.row_chunk)
  return _to_uint8(sums + slots[tables.row_slot])


def _vertical(intermediate, tables: Tables, batch_size: int):
  """``(B, S, S, 3)`` uint8 from the intermediate rows."""
  import jax  # pylint: disable=import-outside-toplevel
  size = tables.x_coef.shape[1]
  taps = tables.line_coef.shape[1]

  def chunk_sums(k):
    start = k * taps
    return _vertical_sums(
        intermediate,
        jax.lax.dynamic_slice_in_dim(tables.slot_rows, start, taps, axis=1),
        jax.lax.dynamic_slice_in_dim(tables.slot_coef, start, taps, axis=1))

  slots = _over_chunks(tables.slot_rows.shape[1] // taps, chunk_sums,
                       (tables.slot_rows.shape[0], size, _CHANNELS))
  sums = _vertical_sums(intermediate, tables.line_rows, tables.line_coef)
  return _to_uint8(sums + slots[tables.line_slot]).reshape(
      batch_size, size, size, _CHANNELS)


@functools.lru_cache(maxsize=None)
def _jitted():
  import jax  # pylint: disable=import-outside-toplevel
  return jax.jit(_resize, static_argnames=('batch_size',))


def resize(flat, tables: Tables, batch_size: int):
  """Resizes a packed batch on the device (jitted).

  Image size and tap counts come from the table shapes, static under
  ``jax.jit``; ``pack``'s buckets keep them few.

  Args:
    flat: ``(Packed.flat_size,)`` uint8, the images at their offsets.
    tables: ``Packed.tables`` (numpy or device arrays).
    batch_size: ``Packed.batch_size``.

  Returns:
    ``(batch_size, S, S, 3)`` uint8, upright HWC, Pillow's pixels exactly;
    rows past ``Packed.count`` are zeros.
  """
  return _jitted()(flat, tables, batch_size=batch_size)


def _resize(flat, tables: Tables, batch_size: int):
  """``resize``'s computation, traced by ``jax.jit``."""
  return _vertical(_horizontal(flat, tables), tables, batch_size)


def back_to_back(shapes: Sequence[Tuple[int, ...]],
                 orientations: Sequence[int], layouts: Sequence[str],
                 resized: Optional[Sequence[bool]] = None
                 ) -> Tuple[List[Source], int]:
  """``Source``s for arrays laid one after the other in a flat buffer.

  Args:
    shapes: Each array's shape: ``(3, H, W)`` for ``'chw'``, ``(H, W, 3)``
      for ``'hwc'``.
    orientations: Their EXIF orientations.
    layouts: Their layouts.
    resized: Which are already model inputs (default: none).

  Returns:
    ``(sources, total)``: the sources, and the bytes they take.
  """
  if resized is None:
    resized = [False] * len(shapes)
  sources, offset = [], 0
  for shape, turn, layout, ready in zip(shapes, orientations, layouts,
                                        resized):
    if layout not in LAYOUTS:
      raise ValueError(f'layout must be one of {LAYOUTS}, not {layout!r}')
    if len(shape) != 3 or shape[0 if layout == 'chw' else 2] != _CHANNELS:
      raise ValueError(f'not an RGB {layout} array: shape {tuple(shape)}')
    height, width = shape[1:] if layout == 'chw' else shape[:2]
    sources.append(Source(int(height), int(width), int(turn), layout, offset,
                          bool(ready)))
    offset += sources[-1].nbytes
  return sources, offset


class RaggedResize:
  """``pack`` and ``resize`` for one config and batch size.

  Plain config only: cheap to build, nothing on the device until called.
  Its ``pack`` reuses the capacity of an earlier batch where that fits and
  costs at most ``reuse_cost`` times the batch's own buckets (any, for a
  short batch), so that a job compiles ``resize`` for a handful of shapes:
  without this, every short last batch of a bundle would have sizes of
  its own. On 1,600 ImageNet-like batches of 256 (one in 8 short), 2.0
  gave 7 shapes, at 47% more work than the batches needed (``Capacity
  .cost``); 1.5 gave 15 shapes at 35%, 1.25 19 at 28%. A compilation
  takes 0.5 to 0.7 s on an H200, the extra work about 0.1 ms a batch
  (estimated from ``Capacity.cost``), so fewer shapes win for jobs of
  this size.
  """

  def __init__(self, config: imaging.DecodeConfig, batch_size: int,
               chunk_taps: int = CHUNK_TAPS, reuse_cost: float = 2.0):
    self.config = config
    self.batch_size = batch_size
    self.chunk_taps = chunk_taps
    self.reuse_cost = reuse_cost
    self._capacities: List[Capacity] = []  # shapes already used
    self._lock = threading.Lock()  # helper threads may pack at once

  @property
  def capacities(self) -> List[Capacity]:
    """The capacities ``pack`` has handed out, each a compiled shape."""
    return list(self._capacities)

  def _capacity(self, need: Capacity, short: bool) -> Capacity:
    fresh = bucketed(need)
    fitting = [c for c in self._capacities if c.holds(need)]
    if fitting:
      best = min(fitting, key=Capacity.cost)
      if short or best.cost() <= self.reuse_cost * fresh.cost():
        return best
    if self._capacities:
      # The sizes that cost memory only: as large as any before, so that
      # this shape fits more later batches.
      fresh = fresh._replace(
          chunks=max(fresh.chunks, *(c.chunks for c in self._capacities)),
          flat_size=max(fresh.flat_size,
                        *(c.flat_size for c in self._capacities)))
    self._capacities.append(fresh)
    return fresh

  def supported(self, width: int, height: int, orientation: int) -> bool:
    """``supported`` for this config (stored width and height)."""
    return supported(width, height, orientation, self.config)

  def pack(self, sources: Sequence[Source]) -> Packed:
    """``pack`` for this config and batch size, in a capacity shared with
    earlier batches where one fits (see the class docstring)."""
    prepared = _prepare(sources, self.config, self.batch_size,
                        self.chunk_taps)
    short = len(sources) < self.batch_size
    with self._lock:
      capacity = self._capacity(_need(prepared), short)
    return _build(prepared, capacity, self.batch_size)

  def run(self, flat, packed: Packed):
    """Resizes a packed batch: ``(batch_size, S, S, 3)`` uint8 on the
    device.

    Args:
      flat: uint8 flat buffer (a JAX array, e.g. from
        ``jax.dlpack.from_dlpack`` of a torch tensor, or numpy) holding
        the images at their ``Source.offset``. Best ``packed.flat_size``
        long: a shorter one is first padded to that on the device (a
        copy); a longer one is used as it is (its length is a shape to
        compile for, so keep it fixed).
      packed: From ``pack`` of the same images.

    Raises:
      ValueError: ``flat`` ends before the last image does.
    """
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    length = flat.shape[0]
    if length < packed.end:
      raise ValueError(f'flat buffer of {length} bytes; the images end at '
                       f'{packed.end}')
    if length < packed.flat_size:
      flat = jnp.pad(jnp.asarray(flat), (0, packed.flat_size - length))
    return resize(flat, packed.tables, packed.batch_size)

  def resize_arrays(self, images: Sequence[Tuple[Any, int, str]],
                    resized: Optional[Sequence[bool]] = None):
    """Resizes arrays (numpy or JAX): builds the flat buffer, packs, runs.

    Args:
      images: ``(array, orientation, layout)`` per image, as for
        ``Source``: ``(3, H, W)`` for ``'chw'``, ``(H, W, 3)`` for
        ``'hwc'``, in the stored orientation.
      resized: Which images are already model inputs (default: none).

    Returns:
      ``(batch_size, S, S, 3)`` uint8 JAX array.
    """
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    sources, total = back_to_back([a.shape for a, _, _ in images],
                                  [turn for _, turn, _ in images],
                                  [layout for _, _, layout in images],
                                  resized)
    packed = self.pack(sources)
    parts = [jnp.ravel(jnp.asarray(a, jnp.uint8)) for a, _, _ in images]
    parts.append(jnp.zeros(packed.flat_size - total, jnp.uint8))
    return self.run(jnp.concatenate(parts), packed)
