"""The ragged-batch resize against Pillow, bit for bit, on JAX's CPU device.

One batch holds images of many sizes (tiny, model-sized, ImageNet-like,
large, extremely wide or tall), in every EXIF orientation, from both
layouts, with model-sized identity rows and padding rows among them; every
output value must equal what ``imaging.decode_image``'s Pillow resize gives
for the upright image.
"""
import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

# pylint: disable=wrong-import-position
import functools

import numpy as np
import pytest
from PIL import Image

from pipeline import demo
from transforms.decode import imaging
from transforms.extract.gpu import orientation, ragged_resize, resample

CONFIGS = {
    'crop224': imaging.DecodeConfig(),
    'squash224': imaging.DecodeConfig(resize='squash'),
    'crop64': imaging.DecodeConfig(image_size=64, resize_shorter=73),
    'squash64': imaging.DecodeConfig(image_size=64, resize='squash',
                                     resize_shorter=73),
}

# Stored (width, height). Chosen for Pillow's branches and the edges of
# the tables: 1- and 2-pixel sides, upscales, sizes at and around the
# model's (256x256 crop224 and 64x64 squash64 skip passes), ImageNet's
# common shapes, large images (many taps per output), very wide and tall
# ones, and the vertical-first boundary: 9x900 is resized as usual,
# 7x701 and 1x5000 are not (so they are left out where upright).
SIZES = [
    (1, 1), (2, 3), (3, 2), (17, 5), (5, 17), (31, 64), (50, 40), (64, 64),
    (73, 73), (96, 96), (100, 80), (150, 151), (223, 224), (224, 224),
    (225, 224), (256, 256), (255, 300), (256, 300), (300, 255), (333, 500),
    (375, 500), (400, 300), (451, 300), (500, 333), (500, 375), (500, 500),
    (600, 400), (640, 480), (800, 600), (1024, 768), (768, 1024),
    (1500, 1000), (3000, 2000), (5000, 1), (1, 5000), (60, 3000),
    (3000, 90), (2, 700), (700, 2), (9, 900), (900, 9), (7, 701), (701, 7),
]

# Sizes that go through all 8 orientations from both layouts.
TURNED = [(17, 5), (255, 300), (500, 375)]


@functools.lru_cache(maxsize=None)
def _photos():
  return [np.asarray(image.convert('RGB'))
          for image in demo.real_photos().values()]


def _pixels(width, height, seed):
  """Stored pixels: seeded noise, or (every other seed) a real photo's
  crop resized to the size, so both kinds of content are covered."""
  rng = np.random.default_rng(seed)
  if seed % 2 == 0:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  photo = _photos()[seed // 2 % len(_photos())]
  h, w = photo.shape[:2]
  top, left = int(rng.integers(0, h // 4)), int(rng.integers(0, w // 4))
  crop = Image.fromarray(photo[top:top + h // 2, left:left + w // 2])
  return np.asarray(crop.resize((width, height), Image.Resampling.BILINEAR))


def _pillow(upright, config):
  """``imaging.decode_image``'s resize of decoded upright RGB pixels."""
  height, width = upright.shape[:2]
  side = config.image_size
  return np.asarray(Image.fromarray(np.ascontiguousarray(upright)).resize(
      (side, side), Image.Resampling.BILINEAR,
      box=imaging.crop_box(width, height, config)))


def _stored(pixels, layout):
  if layout == 'chw':
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))
  return pixels


class _Case:
  """One image of a test batch: its stored array and expected output."""

  def __init__(self, pixels, turn, layout, config, resized=False):
    self.array = _stored(pixels, layout)
    self.turn, self.layout, self.resized = turn, layout, resized
    if resized:
      self.expected = pixels
      self.upright = pixels
    else:
      self.upright = orientation.apply_numpy(pixels, turn)
      self.expected = _pillow(self.upright, config)


def _cases(config):
  """A batch's images: every supported size, the turned sizes in all
  orientations and layouts, and two model-sized identity rows."""
  cases, seed = [], 0
  for index, (width, height) in enumerate(SIZES):
    # Two orientations per size, one that swaps the axes and one that
    # does not, so the tall and wide sizes appear both ways round.
    for turn in (1 + index % 4, 5 + index % 4):
      if not ragged_resize.supported(width, height, turn, config):
        continue
      seed += 1
      layout = ragged_resize.LAYOUTS[(index + turn) % 2]
      cases.append(_Case(_pixels(width, height, seed), turn, layout, config))
  for width, height in TURNED:
    for turn in range(1, 9):
      for layout in ragged_resize.LAYOUTS:
        seed += 1
        cases.append(_Case(_pixels(width, height, seed), turn, layout,
                           config))
  side = config.image_size
  for position in (3, len(cases) // 2):
    seed += 1
    cases.insert(position, _Case(_pixels(side, side, seed), 1, 'hwc', config,
                                 resized=True))
  return cases


def _run(cases, config, batch_size, **kwargs):
  resizer = ragged_resize.RaggedResize(config, batch_size, **kwargs)
  return np.asarray(resizer.resize_arrays(
      [(c.array, c.turn, c.layout) for c in cases],
      resized=[c.resized for c in cases]))


def _assert_exact(out, cases):
  for index, case in enumerate(cases):
    np.testing.assert_array_equal(
        out[index], case.expected,
        err_msg=f'image {index}: {case.upright.shape} turn {case.turn} '
        f'{case.layout}')


@pytest.mark.parametrize('config_name', sorted(CONFIGS))
def test_ragged_batch_matches_pillow_exactly(config_name):
  config = CONFIGS[config_name]
  cases = _cases(config)
  batch_size = len(cases) + 5  # padding rows at the end
  out = _run(cases, config, batch_size)
  assert out.shape == (batch_size, config.image_size, config.image_size, 3)
  assert out.dtype == np.uint8
  _assert_exact(out, cases)
  assert not out[len(cases):].any()
  # The dense-matrix reference of the old GPU path agrees too.
  for index, case in enumerate(cases):
    if not case.resized:
      height, width = case.upright.shape[:2]
      plan = resample.resize_plan(width, height, config)
      np.testing.assert_array_equal(
          out[index], resample.apply_plan(case.upright, plan))
  # Not a batch of zeros: the content is real.
  assert np.mean([case.expected.std() for case in cases]) > 20
  # The batch has outputs of more taps than a chunk, in both passes.
  sources, _ = ragged_resize.back_to_back(
      [c.array.shape for c in cases], [c.turn for c in cases],
      [c.layout for c in cases], [c.resized for c in cases])
  tables = ragged_resize.pack(sources, config, batch_size).tables
  assert tables.row_slot.any() and tables.line_slot.any()


def test_chunk_size_changes_nothing():
  # An image whose filter has more taps than a chunk is summed over
  # several chunks; the integer sums cannot depend on how they are cut.
  config = CONFIGS['crop64']
  cases = [_Case(_pixels(w, h, seed), seed % 8 + 1, 'chw', config)
           for seed, (w, h) in enumerate([(640, 480), (3000, 90), (17, 5),
                                          (1500, 1000)])]
  for chunk_taps in (1, 3, 16):
    _assert_exact(_run(cases, config, 4, chunk_taps=chunk_taps), cases)


def test_padding_is_zero_and_unused_bytes_are_never_read():
  config = CONFIGS['crop64']
  cases = [_Case(_pixels(w, h, seed), turn, layout, config)
           for seed, (w, h, turn, layout) in enumerate([
               (100, 80, 6, 'chw'), (40, 50, 3, 'hwc'), (500, 375, 8, 'chw'),
               (1, 1, 2, 'hwc'), (9, 900, 1, 'chw')])]
  cases.append(_Case(_pixels(64, 64, 9), 1, 'hwc', config, resized=True))
  # Gaps between the images and the tail of the buffer hold 0xAB: any of
  # those bytes read with a nonzero coefficient would change the output.
  sources, offset, chunks = [], 0, []
  for index, case in enumerate(cases):
    gap = np.full(7 * index + 1, 0xAB, np.uint8)
    chunks += [gap, case.array.reshape(-1)]
    offset += gap.size
    height, width = (case.array.shape[1:] if case.layout == 'chw' else
                     case.array.shape[:2])
    sources.append(ragged_resize.Source(height, width, case.turn,
                                        case.layout, offset, case.resized))
    offset += case.array.size
  resizer = ragged_resize.RaggedResize(config, 9)
  packed = resizer.pack(sources)
  assert packed.end == offset and packed.flat_size >= offset
  flat = np.full(packed.flat_size, 0xAB, np.uint8)
  flat[:offset] = np.concatenate(chunks)
  out = np.asarray(resizer.run(flat, packed))
  _assert_exact(out, cases)
  assert not out[len(cases):].any()
  # A buffer shorter than the bucket is padded; one short of the images
  # is refused.
  np.testing.assert_array_equal(
      np.asarray(resizer.run(flat[:offset], packed)), out)
  with pytest.raises(ValueError, match='images end'):
    resizer.run(flat[:offset - 1], packed)


def test_vertical_first_images_are_refused():
  config = CONFIGS['crop224']
  # Upright height over 100 times the width (and shrinking): refused.
  assert not ragged_resize.supported(1, 5000, 1, config)
  assert not ragged_resize.supported(5000, 1, 6, config)  # upright 1x5000
  assert not ragged_resize.supported(7, 701, 2, config)
  assert not ragged_resize.supported(0, 10, 1, config)
  assert ragged_resize.supported(5000, 1, 1, config)
  assert ragged_resize.supported(9, 900, 1, config)  # exactly 100 times
  assert ragged_resize.supported(1, 150, 1, config)  # 150 < 224: upscaled
  for width, height, turn in [(1, 5000, 1), (5000, 1, 6), (7, 701, 2)]:
    upright = (height, width) if turn >= 5 else (width, height)
    assert resample.resize_plan(*upright, config).vertical_first
  sources, _ = ragged_resize.back_to_back(
      [(3, 10, 10), (3, 1, 5000), (3, 20, 20), (3, 5000, 1)], [1, 6, 1, 1],
      ['chw'] * 4)
  with pytest.raises(ValueError, match=r'images \[1, 3\]'):
    ragged_resize.pack(sources, config, 8)


def test_bad_sources_are_refused():
  config = CONFIGS['crop64']
  with pytest.raises(ValueError, match='batch of 1'):
    ragged_resize.pack([ragged_resize.Source(5, 5)] * 2, config, 1)
  with pytest.raises(ValueError, match='layout'):
    ragged_resize.pack([ragged_resize.Source(5, 5, layout='hw')], config, 1)
  with pytest.raises(ValueError, match='marked resized'):
    ragged_resize.pack([ragged_resize.Source(5, 5, resized=True)], config, 1)
  with pytest.raises(ValueError, match='not an RGB'):
    ragged_resize.back_to_back([(5, 5, 3)], [1], ['chw'])


def _imagenet_like_sizes(rng, count):
  """Mostly ImageNet's common shapes, a spread of others, a few large."""
  common = [(500, 375), (375, 500), (500, 333), (333, 500), (500, 500),
            (500, 400), (400, 500), (640, 480)]
  sizes = []
  for _ in range(count):
    pick = rng.random()
    if pick < 0.55:
      sizes.append(common[int(rng.integers(len(common)))])
    else:
      side = np.exp(rng.uniform(np.log(300), np.log(
          4500 if pick > 0.98 else 800)))
      aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
      sizes.append((max(1, round(side)), max(1, round(side / aspect))))
  return sizes


def test_buckets_keep_compiled_shapes_few():
  config = CONFIGS['crop224']
  resizer = ragged_resize.RaggedResize(config, 256)
  rng = np.random.default_rng(5)
  for batch in range(48):
    # Full batches, and now and then the short last one of a bundle.
    count = int(rng.integers(1, 256)) if batch % 8 == 7 else 256
    sizes = _imagenet_like_sizes(rng, count)
    sources, total = ragged_resize.back_to_back(
        [(3, h, w) for w, h in sizes], rng.integers(1, 9, count),
        ['chw'] * count)
    known = resizer.capacities
    packed = resizer.pack(sources)
    assert packed.flat_size >= total == packed.end
    tables, capacity = packed.tables, packed.capacity
    assert tables.row_base.shape == (capacity.rows,)
    assert tables.slot_chunks.shape == (capacity.slots,
                                        capacity.slot_chunks)
    assert tables.slot_rows.shape == (
        capacity.line_slots, capacity.line_slot_chunks * resizer.chunk_taps)
    assert tables.x_coef.shape[0] == capacity.chunks
    if count < 256:
      assert packed.capacity in known  # a short batch adds no shape
  # Measured: 3 shapes; fresh buckets for each batch (``pack`` alone) give
  # 12, most of them from the short batches.
  assert len(resizer.capacities) <= 5, resizer.capacities
  too_small = ragged_resize.pack(sources, config, 256).capacity._replace(
      rows=1)
  with pytest.raises(ValueError, match='needs'):
    ragged_resize.pack(sources, config, 256, capacity=too_small)


def test_bucket_rounding():
  bucket = ragged_resize._bucket  # pylint: disable=protected-access
  assert [bucket(n, 4, 2) for n in (1, 4, 5, 6, 7, 9, 13, 17)] == [
      4, 4, 6, 6, 8, 12, 16, 24]
  for n in range(1, 5000, 7):
    rounded = bucket(n, 1, 4)
    assert n <= rounded <= n * 1.25 + 1
  assert bucket(3000, 1 << 20, 1) == 1 << 20
  assert bucket((1 << 20) + 1, 1 << 20, 1) == 1 << 21


@pytest.mark.parametrize('in_size,box,out_size', [
    (3000, (625.0, 2375.0), 224), (500, (85.9375, 414.0625), 224),
    (1, (0.0, 1.0), 224), (5000, (0.0, 5000.0), 224), (50, (3.5, 46.5), 64),
    (256, (16.0, 240.0), 224)])
def test_axis_taps_are_axis_weights(in_size, box, out_size):
  index, coef = resample.axis_taps(in_size, *box, out_size)
  assert index.dtype == coef.dtype == np.int32
  assert index.shape == coef.shape and index.shape[0] == out_size
  assert index.min() >= 0 and index.max() < in_size
  first, weights = resample.axis_weights(in_size, *box, out_size)
  dense = np.zeros((out_size, in_size), np.int64)
  np.add.at(dense, (np.arange(out_size)[:, None], index), coef)
  fixed = weights.astype(np.float64) * 2**resample.PRECISION_BITS
  np.testing.assert_array_equal(
      dense[:, first:first + weights.shape[1]], fixed)
  assert not dense[:, :first].any()
  assert not dense[:, first + weights.shape[1]:].any()
  # No int32 sum of 8-bit pixels can overflow.
  sums = coef.astype(np.int64).sum(axis=1)
  assert 255 * sums.max() + 2**21 < 2**31
