"""Batches of encoded images bounded by count and by bytes, filled from
both decoders, and the GPU path's fallback to the CPU decoder, without a
model or a GPU."""
import threading
from concurrent import futures

import numpy as np

from tests.support import image_zoo
from transforms.decode import imaging
from transforms.decode.decode_images import decode_record
from transforms.extract.gpu import (batching, decoders, device_batches,
                                    jpeg_header, routing)
from transforms.records import DecodedImage, ErrorRecord, ImageRecord

CONFIG = imaging.DecodeConfig()


class _RefusesEveryOther(decoders.PillowStandIn):
  """A decoder that refuses some JPEGs, as nvJPEG may."""

  def decode(self, datas):
    out = super().decode(datas)
    return [None if i % 2 else pixels for i, pixels in enumerate(out)]


def test_images_the_device_refuses_take_the_cpu_path():
  records = [ImageRecord(f'photo-{i}', 'test', image_zoo.jpeg(size=(300, 200)))
             for i in range(4)]
  records.append(ImageRecord('cmyk', 'test', image_zoo.cmyk_jpeg()))
  records.append(ImageRecord('empty', 'test', b''))
  batch, errors = device_batches.batch_of(records, CONFIG)
  assert [r.key for r, _ in batch.device] == [f'photo-{i}' for i in range(4)]
  assert [r.key for r, _ in batch.decoded] == ['cmyk']
  assert errors == [decode_record(records[-1], CONFIG)]
  decoded, rows, refused_errors, _ = device_batches.decode_on_device(
      batch, _RefusesEveryOther(CONFIG, 8), CONFIG)
  assert not refused_errors
  # Photos 0 and 2 on the device; 1 and 3 refused, so the CPU path's.
  assert [image.key for image, _, _ in decoded] == ['photo-0', 'photo-2']
  assert [image.key for image, _ in rows] == ['cmyk', 'photo-1', 'photo-3']
  for image, pixels in rows:  # the CPU path's own rows
    np.testing.assert_array_equal(pixels,
                                  decode_record(image, CONFIG).pixels)
  for _, pixels, turn in decoded:  # full size, as nvJPEG gives them
    assert pixels.shape == (200, 300, 3) and turn == 1


SMALL = jpeg_header.JpegScreen(True, width=30, height=20)


def _future(value):
  done = futures.Future()
  done.set_result(value)
  return done


def _decoded(key):
  return DecodedImage(key, 'test', np.full((224, 224, 3), 7, np.uint8))


def test_routed_batches_take_cpu_rows_as_they_finish():
  batcher = batching.RoutedBatcher(4, 1 << 20, 1 << 30, max_pending=8)
  slow = futures.Future()
  batcher.add_cpu(ImageRecord('slow', 'test', b'x'), slow)
  batcher.add_cpu(ImageRecord('fast', 'test', b'x'), _future(_decoded('fast')))
  for i in range(3):
    batcher.add_device(ImageRecord(f'd{i}', 'test', b'y' * 10), SMALL)
  # 'fast' finished but queues behind 'slow': in order, nothing is full.
  assert list(batcher.ready()) == []
  batcher.add_device(ImageRecord('d3', 'test', b'y' * 10), SMALL)
  (full,) = batcher.ready()  # a slow decode never holds a batch back
  assert [r.key for r, _ in full.device] == ['d0', 'd1', 'd2', 'd3']
  assert full.decoded == []
  slow.set_result(ErrorRecord('slow', 'test', 'decode', 'corrupt_image', '!'))
  batcher.add_device(ImageRecord('d4', 'test', b'y' * 10), SMALL)
  assert list(batcher.ready()) == []
  assert [e.key for e in batcher.errors()] == ['slow']
  rest = list(batcher.drain())
  assert [(len(b.decoded), len(b.device)) for b in rest] == [(1, 1)]
  assert rest[0].decoded[0][0].key == 'fast'  # CPU rows first
  assert batcher.errors() == []


def test_routed_batches_close_on_encoded_bytes():
  batcher = batching.RoutedBatcher(100, 25, 1 << 30, max_pending=8)
  for key in 'abc':
    batcher.add_device(ImageRecord(key, 'test', b'z' * 10), SMALL)
  (first,) = batcher.ready()  # 30 bytes >= 25: the first two go out
  assert [r.key for r, _ in first.device] == ['a', 'b']
  assert [[r.key for r, _ in b.device] for b in batcher.drain()] == [['c']]


def test_routed_batches_close_on_full_size_pixels():
  """A batch's decoded pixels are bounded on the device: large photos
  close a batch early, and one over the bound goes alone."""
  batcher = batching.RoutedBatcher(100, 1 << 30, 1000, max_pending=8)
  big = jpeg_header.JpegScreen(True, width=20, height=10)  # 600 bytes
  huge = jpeg_header.JpegScreen(True, width=100, height=10)  # 3,000
  batcher.add_device(ImageRecord('a', 'test', b'1'), big)
  assert list(batcher.ready()) == []
  batcher.add_device(ImageRecord('b', 'test', b'2'), big)  # 1,200 >= 1,000
  (first,) = batcher.ready()
  assert [r.key for r, _ in first.device] == ['a']
  batcher.add_device(ImageRecord('c', 'test', b'3'), huge)
  assert [[r.key for r, _ in b.device] for b in batcher.ready()] == [
      ['b'], ['c']]
  assert list(batcher.drain()) == []


def test_routed_batcher_bounds_the_cpu_decodes_under_way():
  batcher = batching.RoutedBatcher(100, 1 << 20, 1 << 30, max_pending=2)
  oldest = futures.Future()
  batcher.add_cpu(ImageRecord('a', 'test', b'x'), oldest)
  batcher.add_cpu(ImageRecord('b', 'test', b'x'), _future(_decoded('b')))
  assert batcher.waited_s == 0
  timer = threading.Timer(0.3, oldest.set_result, [_decoded('a')])
  timer.start()
  # A third decode under way waits for the oldest first.
  batcher.add_cpu(ImageRecord('c', 'test', b'x'), _future(_decoded('c')))
  assert oldest.done() and batcher.waited_s >= 0.2
  assert [r.key for b in batcher.drain() for r, _ in b.decoded] == [
      'a', 'b', 'c']


def test_routing_sends_only_baseline_jpegs_to_the_device():
  progressive = image_zoo.encode(image_zoo.photo(), 'JPEG', quality=90,
                                 progressive=True)
  cases = {
      'baseline': (image_zoo.jpeg(size=(300, 200)), routing.DEVICE),
      'grayscale': (image_zoo.grayscale_jpeg(), routing.DEVICE),
      'progressive': (progressive, 'progressive'),
      'cmyk': (image_zoo.cmyk_jpeg(), 'cmyk'),
      'png': (image_zoo.png(), 'not_jpeg'),
      'empty': (b'', 'not_jpeg'),
      'html': (image_zoo.text_as_jpg(), 'not_jpeg'),
      'truncated': (image_zoo.truncated_jpeg(), 'other_jpeg'),
      'huge': (image_zoo.huge_header_jpeg(), 'too_large'),
      'tall': (image_zoo.jpeg(size=(4, 1000)), 'extreme_aspect'),
  }
  for name, (data, want) in cases.items():
    route = routing.route(data, CONFIG)
    assert route.category == want, (name, route)
    assert route.on_device == (want == routing.DEVICE), name
    assert route.category in routing.CATEGORIES


def test_baseline_jpegs_of_any_size_go_to_the_device():
  large = image_zoo.big_jpeg((1600, 1200))
  small = image_zoo.jpeg(size=(500, 375))
  progressive = image_zoo.encode(image_zoo.photo().resize((1600, 1200)),
                                 'JPEG', quality=90, progressive=True)
  assert routing.route(large, CONFIG).category == routing.DEVICE
  assert routing.route(small, CONFIG).on_device
  assert routing.route(progressive, CONFIG).category == 'progressive'
  # Smaller than the model's input: scaled up (ImageNet has many such
  # thumbnails; the route must not raise on them).
  for size in [(100, 75), (1, 1), (240, 180)]:
    tiny = image_zoo.jpeg(size=size)
    assert routing.route(tiny, CONFIG).on_device, size


def test_cpu_decoders_run_on_their_own_threads():
  from transforms.extract.gpu import runtime  # pylint: disable=import-outside-toplevel
  cpu = runtime.CpuDecoders(2)
  # Two decodes at once: each waits for the other to have started.
  started = [threading.Event(), threading.Event()]

  def wait_for(mine, other):
    mine.set()
    return other.wait(5)

  both = [cpu.submit(wait_for, started[0], started[1]),
          cpu.submit(wait_for, started[1], started[0])]
  assert [f.result(timeout=10) for f in both] == [True, True]
  assert cpu.submit(sum, [1, 2]).result() == 3
  cpu.shutdown()


def test_a_batch_the_decoder_rejects_is_decoded_one_by_one():
  calls = []

  def decode(encoded):
    calls.append(encoded)
    if isinstance(encoded, list):
      raise ValueError('one bad image spoils the batch call')
    if encoded == b'bad':
      raise RuntimeError('nvJPEG: unsupported')
    return encoded.upper()

  assert decoders.decode_each_on_failure(decode, [b'a', b'bad', b'c']) == [
      b'A', None, b'C']
  assert len(calls) == 4  # the batch, then each alone


class _Broken(decoders.PillowStandIn):
  def decode(self, datas):
    raise TypeError('the decoder itself broke')


def test_a_broken_decoder_costs_its_images_error_lines_not_the_run():
  records = [ImageRecord(f'photo-{i}', 'test', image_zoo.jpeg(size=(300, 200)))
             for i in range(3)]
  records.append(ImageRecord('cmyk', 'test', image_zoo.cmyk_jpeg()))
  batch, _ = device_batches.batch_of(records, CONFIG)
  decoded, rows, errors, _ = device_batches.decode_on_device(
      batch, _Broken(CONFIG, 8), CONFIG)
  assert decoded == []
  assert [image.key for image, _ in rows] == ['cmyk']  # the CPU row goes on
  assert [(e.key, e.stage, e.error_type) for e in errors] == [
      (f'photo-{i}', 'decode', 'TypeError') for i in range(3)]


def test_a_failed_batch_is_an_error_line_for_each_image():
  records = [ImageRecord(f'photo-{i}', 'test', image_zoo.jpeg(size=(300, 200)))
             for i in range(2)]
  records.append(ImageRecord('cmyk', 'test', image_zoo.cmyk_jpeg()))
  batch, _ = device_batches.batch_of(records, CONFIG)
  result = device_batches.failed(batch, ConnectionError('server gone'))
  assert result.features == [] and result.timings is None
  assert [(e.key, e.stage, e.error_type, e.message) for e in result.errors] == [
      ('photo-0', 'inference', 'ConnectionError', 'server gone'),
      ('photo-1', 'inference', 'ConnectionError', 'server gone'),
      ('cmyk', 'inference', 'ConnectionError', 'server gone')]


def test_thread_names_show_in_the_system_but_not_for_the_main_thread():
  from transforms.extract.gpu import runtime

  def comm():
    with open(f'/proc/self/task/{threading.get_native_id()}/comm') as f:
      return f.read().strip()

  before = comm()
  runtime.name_thread('fz-bundle')
  assert comm() == before  # the main thread: the process's name
  seen = []
  worker = threading.Thread(
      target=lambda: (runtime.name_thread('fz-gpu-batches-long'),
                      seen.append(comm())))
  worker.start()
  worker.join()
  assert seen == ['fz-gpu-batches-']  # 15 bytes at most
