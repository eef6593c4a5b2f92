"""``DecodeImages``: encoded images in, model-sized RGB arrays out.

A thin DoFn over ``imaging``; every failure becomes an ``ErrorRecord`` on
the ``errors`` output and the run goes on.

Decoding ahead: on the CPU path, decoding and the model share one fused
stage, whose thread would decode the next batch only after the model has
run this one. With ``DecodeImages(ahead=N)``, a helper thread decodes up
to ``N`` images ahead of what the stage has emitted, at the lowest CPU
priority: it takes the moments when TensorFlow leaves a core idle (a
model uses about 1.8 of 2 cores), not TensorFlow's time. An image the
helper has not started when the stage needs it is decoded by the stage
itself, so the helper never holds the run up. The images come out in the
order they came in. docs/PERFORMANCE.md ("Other models") has the
measurements (``python -m benchmarks.decode_ahead``).

Memory stays bounded: the helper takes only images whose decode may take
at most ``DECODE_AHEAD_BYTES`` (``imaging.decode_bytes``, read from the
header). A larger one is decoded on the stage's thread once everything
ahead of it has gone downstream, so it is never held beside a running
batch. ``pipeline/memory_plan.py`` counts the helper's share
(``ahead_bytes``).
"""
import collections
import concurrent.futures
import os
import sys
import threading
import time
from typing import Deque, Iterator, NamedTuple, Optional, Tuple, Union

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue
from PIL import Image

from transforms import metrics
from transforms.decode import imaging
from transforms.records import DecodedImage, ErrorRecord, ImageRecord

# The largest decode the helper thread takes on while a batch may be
# running: 1.7 MP at the worst cost per pixel (an RGBA PNG), or any JPEG
# that ``draft`` reduces to that (a 12 MP photo for a 224 or 299 px model).
DECODE_AHEAD_BYTES = 32 << 20
# The helper's nice value: the lowest priority.
HELPER_NICE = 19

Decoded = Union[DecodedImage, ErrorRecord]


def decode_record(record: ImageRecord,
                  config: imaging.DecodeConfig) -> Decoded:
  """Decodes one record; returns a ``DecodedImage`` or an ``ErrorRecord``."""
  return _finish(record, None, config)


def _finish(record: ImageRecord, image: Optional[Image.Image],
            config: imaging.DecodeConfig) -> Decoded:
  """Decodes ``record`` (``image``: its header, already opened), catching
  every failure as an ``ErrorRecord``."""
  try:
    if image is None:
      image = imaging.open_reduced(record.data, config)
    pixels = imaging.decode_opened(image, record.data, config)
  except Exception as e:  # pylint: disable=broad-except
    # An image must never crash the run: imaging.ImageError names its
    # reason, anything else its class.
    return ErrorRecord.from_exception(record.key, record.source, 'decode', e)
  return DecodedImage(record.key, record.source, pixels, record.label)


def _timed(record: ImageRecord, image: Optional[Image.Image],
           config: imaging.DecodeConfig) -> Tuple[Decoded, float]:
  """Decodes, with the decode's CPU time: on the low-priority helper, the
  wall time would also count the time it waited for a core."""
  started = time.thread_time()
  return _finish(record, image, config), time.thread_time() - started


def ahead_bytes(ahead: int, image_size: int) -> int:
  """What decoding ``ahead`` images ahead adds to a worker thread's
  memory: the helper's one decode, and the decoded images waiting."""
  if ahead <= 0:
    return 0
  return DECODE_AHEAD_BYTES + ahead * image_size * image_size * 3


def lower_priority() -> None:
  """Gives the calling thread the lowest CPU priority, where the OS has
  per-thread priorities (Linux: a thread's nice value); elsewhere it runs
  at the process's priority."""
  if sys.platform.startswith('linux'):
    try:
      os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HELPER_NICE)
    except OSError:
      pass


class _Pending(NamedTuple):
  future: concurrent.futures.Future
  record: ImageRecord
  image: Image.Image
  windowed: WindowedValue


class _DecodeFn(beam.DoFn):

  def __init__(self, config: imaging.DecodeConfig, ahead: int):
    self._config = config
    self._ahead = ahead
    self._failures = metrics.counter(metrics.DECODE_ERRORS)
    self._decoded = metrics.counter(metrics.IMAGES_DECODED)
    self._decode_us = metrics.distribution(metrics.DECODE_MICROS)
    self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
    self._pending: Deque[_Pending] = collections.deque()

  def setup(self):
    if self._ahead > 0:
      self._pool = concurrent.futures.ThreadPoolExecutor(
          1, thread_name_prefix='featurize-decode',
          initializer=lower_priority)

  def start_bundle(self):
    self._pending.clear()

  def process(self, record: ImageRecord,
              windowed=beam.DoFn.WindowedValueParam) -> Iterator:
    image = None
    if self._pool is not None:
      try:
        image = imaging.open_reduced(record.data, self._config)
      except Exception:  # pylint: disable=broad-except
        image = None  # decoded below, which says what is wrong
      else:
        if imaging.decode_bytes(image) <= DECODE_AHEAD_BYTES:
          future = self._pool.submit(_timed, record, image, self._config)
          self._pending.append(_Pending(future, record, image, windowed))
          while len(self._pending) > self._ahead:
            yield self._emit(self._pending.popleft())
          return
    # Too large to decode beside a batch, or a header that cannot be
    # read: everything ahead of it goes first, then it decodes here.
    yield from self._drain()
    yield self._output(*_timed(record, image, self._config), windowed)

  def finish_bundle(self):
    yield from self._drain()

  def teardown(self):
    if self._pool is not None:
      self._pool.shutdown(wait=True)

  def _drain(self) -> Iterator:
    while self._pending:
      yield self._emit(self._pending.popleft())

  def _emit(self, pending: _Pending):
    if pending.future.cancel():
      # The helper has not started it: decode it here rather than wait.
      return self._output(*_timed(pending.record, pending.image,
                                  self._config), pending.windowed)
    result, seconds = pending.future.result()
    return self._output(result, seconds, pending.windowed)

  def _output(self, result: Decoded, seconds: float,
              windowed: WindowedValue):
    # Counted here, on the stage's thread: Beam's metrics belong to the
    # thread that runs the bundle.
    self._decode_us.update(int(seconds * 1e6))
    if isinstance(result, ErrorRecord):
      self._failures.inc()
      return beam.pvalue.TaggedOutput(metrics.ERRORS_TAG,
                                      windowed.with_value(result))
    self._decoded.inc()
    return windowed.with_value(result)


class DecodeImages(beam.PTransform):
  """Decodes and resizes images; outputs ``decoded`` and ``errors``.

  Args:
    config: The decode settings.
    ahead: Images to decode ahead on a low-priority helper thread (see the
      module's docstring); 0 decodes each on the stage's thread.
  """

  def __init__(self, config: imaging.DecodeConfig, ahead: int = 0):
    super().__init__()
    self.config = config
    self.ahead = ahead

  def expand(self, images):
    return images | 'Decode' >> beam.ParDo(
        _DecodeFn(self.config, self.ahead)).with_outputs(
            metrics.ERRORS_TAG, main='decoded')
