"""Batches of encoded images bounded by count and by bytes, and the
GPU path's fallback to the CPU decoder, without a model or a GPU."""
import numpy as np

from tests import image_zoo
from transforms import imaging
from transforms.decode import decode_record
from transforms.gpu import batching, decoders, device_batches
from transforms.records import ErrorRecord, ImageRecord

CONFIG = imaging.DecodeConfig()


def test_batches_close_on_count():
  batcher = batching.Batcher(3, 1000, len)
  out = [batcher.add(b'x' * 10) for _ in range(7)]
  assert [len(b) if b else None for b in out] == [None, None, 3, None, None,
                                                   3, None]
  assert len(batcher.flush()) == 1
  assert batcher.flush() is None


def test_batches_close_on_bytes_before_the_item_that_overflows():
  batcher = batching.Batcher(100, 25, len)
  assert batcher.add(b'a' * 10) is None
  assert batcher.add(b'b' * 10) is None
  full = batcher.add(b'c' * 10)  # 30 > 25: the first two go out
  assert full == [b'a' * 10, b'b' * 10]
  assert batcher.add(b'd' * 100) == [b'c' * 10]  # too big: goes alone next
  assert batcher.flush() == [b'd' * 100]


def test_chunks_by_bytes_keep_order_and_bound():
  sizes = [5, 5, 5, 20, 1, 1]
  chunks = batching.chunks_by_bytes(sizes, 10)
  assert [list(c) for c in chunks] == [[0, 1], [2], [3], [4, 5]]
  assert batching.chunks_by_bytes([], 10) == []


class _RefusesEveryOther(decoders.PillowStandIn):
  """A decoder that refuses some JPEGs, as nvJPEG may."""

  def decode(self, datas, orientations):
    out = super().decode(datas, orientations)
    return [None if i % 2 else pixels for i, pixels in enumerate(out)]


def test_images_the_device_refuses_take_the_cpu_path():
  records = [ImageRecord(f'photo-{i}', 'test', image_zoo.jpeg(size=(300, 200)))
             for i in range(4)]
  records.append(ImageRecord('cmyk', 'test', image_zoo.cmyk_jpeg()))
  records.append(ImageRecord('empty', 'test', b''))
  decoded, errors, on_device, _ = device_batches.decode_batch(
      records, _RefusesEveryOther(CONFIG), CONFIG)
  assert on_device == 2  # photos 0 and 2; 1 and 3 refused, CMYK screened out
  assert sorted(image.key for image, _ in decoded) == [
      'cmyk', 'photo-0', 'photo-1', 'photo-2', 'photo-3']
  assert errors == [decode_record(records[-1], CONFIG)]
  assert isinstance(errors[0], ErrorRecord)
  for image, pixels in decoded:  # the CPU path's pixels for the fallbacks
    if image.key in ('photo-1', 'photo-3', 'cmyk'):
      np.testing.assert_array_equal(pixels,
                                    decode_record(image, CONFIG).pixels)
