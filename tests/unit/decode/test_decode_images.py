"""``DecodeImages``: decoding ahead on a helper thread gives what decoding
in place gives, in order, at the lowest priority, and never takes a large
decode off the stage's thread."""
import os
import sys
import threading

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue
from PIL import Image

from tests.support import image_zoo
from transforms import metrics
from transforms.decode import decode_images, imaging
from transforms.decode.decode_images import DecodeImages
from transforms.records import DecodedImage, ErrorRecord, ImageRecord

CONFIG = imaging.DecodeConfig()


def _zoo_records():
  return [ImageRecord(name, 'zoo', maker(), None)
          for name, (maker, _) in sorted(image_zoo.ZOO.items())]


def _large_png() -> bytes:
  """A PNG whose decode may take more than the helper is allowed."""
  side = 1500
  assert side * side * imaging.DECODE_BYTES_PER_PIXEL > (
      decode_images.DECODE_AHEAD_BYTES)
  return image_zoo.encode(Image.new('RGB', (side, side), (200, 90, 30)),
                          'PNG')


def _check(expected, kind):
  def matches(actual):
    wanted = {k: v for k, v in expected.items() if isinstance(v, kind)}
    assert sorted(r.key for r in actual) == sorted(wanted)
    for record in actual:
      if kind is DecodedImage:
        np.testing.assert_array_equal(record.pixels,
                                      wanted[record.key].pixels)
      else:
        assert record == wanted[record.key]
  return matches


@pytest.mark.parametrize('ahead', [0, 3])
def test_decoding_ahead_gives_what_decoding_in_place_gives(ahead):
  """A real pipeline over the zoo (good images of every kind, every kind of
  bad one) and a large PNG: each image decodes as ``decode_record`` says,
  or fails with its reason."""
  records = _zoo_records() + [ImageRecord('large', 'zoo', _large_png(), None)]
  expected = {r.key: decode_images.decode_record(r, CONFIG) for r in records}
  assert any(isinstance(v, ErrorRecord) for v in expected.values())
  with beam.Pipeline() as pipeline:
    decoded = (pipeline | beam.Create(records)
               | DecodeImages(CONFIG, ahead=ahead))
    assert_that(decoded.decoded, _check(expected, DecodedImage),
                label='Decoded')
    assert_that(decoded[metrics.ERRORS_TAG], _check(expected, ErrorRecord),
                label='Errors')


def _key(output):
  tagged = isinstance(output, beam.pvalue.TaggedOutput)
  windowed = output.value if tagged else output
  assert isinstance(windowed, WindowedValue)
  return ('error:' if tagged else '') + windowed.value.key


def _run_fn(fn, records):
  """Feeds ``records`` to the DoFn one by one; returns the keys emitted
  after each, then those of finish_bundle."""
  fn.setup()
  fn.start_bundle()
  emitted = []
  for i, record in enumerate(records):
    windowed = WindowedValue(record, i, [GlobalWindow()])
    emitted.append([_key(out) for out in fn.process(record, windowed)])
  emitted.append([_key(out) for out in fn.finish_bundle()])
  fn.teardown()
  return emitted


def test_images_come_out_in_order_a_window_behind():
  records = [ImageRecord(f'p{i}', 's', image_zoo.jpeg(), None)
             for i in range(5)]
  emitted = _run_fn(decode_images._DecodeFn(CONFIG, ahead=2), records)
  assert emitted == [[], [], ['p0'], ['p1'], ['p2'], ['p3', 'p4']]


def test_a_large_or_unreadable_image_waits_and_decodes_on_the_stage():
  """What is ahead of it goes downstream first; then it is decoded on the
  stage's own thread, never beside a running batch."""
  records = [ImageRecord('a', 's', image_zoo.jpeg(), None),
             ImageRecord('large', 's', _large_png(), None),
             ImageRecord('b', 's', image_zoo.jpeg(), None),
             ImageRecord('text', 's', image_zoo.text_as_jpg(), None),
             ImageRecord('c', 's', image_zoo.jpeg(), None)]
  emitted = _run_fn(decode_images._DecodeFn(CONFIG, ahead=4), records)
  assert emitted == [[], ['a', 'large'], [], ['b', 'error:text'], [],
                     ['c']]


def test_outputs_keep_their_inputs_timestamp_and_window():
  fn = decode_images._DecodeFn(CONFIG, ahead=1)
  fn.setup()
  fn.start_bundle()
  first = ImageRecord('p0', 's', image_zoo.jpeg(), None)
  assert not list(fn.process(first, WindowedValue(first, 7,
                                                  [GlobalWindow()])))
  second = ImageRecord('p1', 's', image_zoo.jpeg(), None)
  out = list(fn.process(second, WindowedValue(second, 9, [GlobalWindow()])))
  assert [(o.value.key, o.timestamp.micros) for o in out] == [('p0', 7e6)]
  out = list(fn.finish_bundle())
  assert [(o.value.key, o.timestamp.micros) for o in out] == [('p1', 9e6)]
  fn.teardown()


def test_an_image_the_helper_has_not_started_is_decoded_by_the_stage():
  """A busy helper never holds the stage up: what it has not begun, the
  stage decodes itself."""
  fn = decode_images._DecodeFn(CONFIG, ahead=8)
  fn.setup()
  fn.start_bundle()
  blocked, release = threading.Event(), threading.Event()
  fn._pool.submit(lambda: (blocked.set(), release.wait(30)))
  assert blocked.wait(30)  # the helper is busy until released
  records = [ImageRecord(f'p{i}', 's', image_zoo.jpeg(), None)
             for i in range(3)]
  for record in records:
    assert not list(fn.process(record, WindowedValue(record, 0,
                                                     [GlobalWindow()])))
  out = list(fn.finish_bundle())
  release.set()
  assert [o.value.key for o in out] == ['p0', 'p1', 'p2']
  np.testing.assert_array_equal(out[0].value.pixels,
                                imaging.decode_image(records[0].data, CONFIG))
  fn.teardown()


def test_the_helper_runs_at_the_lowest_priority():
  """(Linux, where featurize's workers run: per-thread priorities.)"""
  assert sys.platform.startswith('linux')
  fn = decode_images._DecodeFn(CONFIG, ahead=1)
  fn.setup()
  helper = fn._pool.submit(threading.get_native_id).result()
  assert os.getpriority(os.PRIO_PROCESS, helper) == (
      decode_images.HELPER_NICE)
  assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == (
      os.getpriority(os.PRIO_PROCESS, os.getpid()))
  fn.teardown()


def test_ahead_bytes_count_one_decode_and_the_images_waiting():
  assert decode_images.ahead_bytes(0, 224) == 0
  assert decode_images.ahead_bytes(16, 299) == (
      decode_images.DECODE_AHEAD_BYTES + 16 * 299 * 299 * 3)
