"""Runs one fuzzed input through the pure decoder or a shard reader and
checks the invariants: a normal return, one outcome per image, every
outcome well formed, within a time and a memory limit.

A failing input is written to ``$FEATURIZE_FUZZ_FAILURES`` (default
``<tmp>/featurize-fuzz-failures``), so that it can be committed under
``tests/fuzz_regressions/`` once fixed.
"""
import collections
import contextlib
import faulthandler
import io
import os
import resource
import signal
import tempfile
import time
from typing import Callable, List

import numpy as np

from tests.support.fuzz.limits import (DECODE_CONFIG, READ_LIMIT, RSS_LIMIT_MB,
                                       TIME_LIMIT_S)
from tests.support.fuzz.mutations import Mutant
from transforms.decode import imaging
from transforms.read import shard_readers
from transforms.records import ErrorRecord, ImageRecord

# Outcome counts per target, over the whole session (the tests print them).
STATS = collections.defaultdict(collections.Counter)
# The slowest input (seconds, and which) and the largest RSS growth (MB)
# per target.
WORST = collections.defaultdict(lambda: {'seconds': 0.0, 'rss_mb': 0.0,
                                         'slowest': None})

# If an input hangs inside C code, the alarm below cannot interrupt it;
# faulthandler then dumps every thread's stack and ends the process, so a
# hang fails CI instead of blocking it.
_BACKSTOP_S = 60


class FuzzTimeout(BaseException):
  """An input ran past its time limit.

  A BaseException, like KeyboardInterrupt: the code under test catches
  ``Exception`` (``decode_record`` does), and must not swallow this.
  """


@contextlib.contextmanager
def backstop(seconds: float):
  """Dumps every thread's stack and ends the process after ``seconds``."""
  faulthandler.dump_traceback_later(seconds, exit=True)
  try:
    yield
  finally:
    faulthandler.cancel_dump_traceback_later()


@contextlib.contextmanager
def time_limit(seconds: float):
  """Raises ``FuzzTimeout`` in the main thread after ``seconds`` of CPU.

  CPU time rather than wall time: a hang spins, while a machine shared
  with other jobs (CI) only stretches the wall clock (inputs take ~10 ms,
  yet one in 10^5 took 0.8 s of wall time here). The wall-clock backstop
  covers an input that blocks without spinning.
  """

  def on_timer(signum, frame):
    del signum, frame
    raise FuzzTimeout(f'no result within {seconds} s of CPU time')

  previous = signal.signal(signal.SIGPROF, on_timer)
  signal.setitimer(signal.ITIMER_PROF, seconds)
  try:
    with backstop(_BACKSTOP_S):
      yield
  finally:
    signal.setitimer(signal.ITIMER_PROF, 0)
    signal.signal(signal.SIGPROF, previous)


def _status_kb(field: str) -> int:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1])
  raise RuntimeError(f'no {field} in /proc/self/status')


class PeakRss:
  """Peak RSS growth (MB) of this process while the block runs.

  Linux resets the peak (VmHWM) to the current RSS on writing 5 to
  ``/proc/self/clear_refs``; without that (not Linux, or not allowed),
  ``ru_maxrss`` only shows growth past the process's earlier peak.
  """

  def __enter__(self):
    try:
      with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
      self._start_kb = _status_kb('VmRSS')
      self._peak = lambda: _status_kb('VmHWM')
    except OSError:
      self._start_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
      self._peak = lambda: resource.getrusage(
          resource.RUSAGE_SELF).ru_maxrss
    return self

  def __exit__(self, *exc_info):
    self.growth_mb = (self._peak() - self._start_kb) / 1024


# --------------------------------------------------------------------------
# Invariants. Each check returns one label per image, in order.


def decode_label(data: bytes,
                 config: imaging.DecodeConfig = DECODE_CONFIG) -> str:
  """``decoded``, or the error type: decode_image may raise ImageError only
  (the decode step turns it into an error line)."""
  try:
    pixels = imaging.decode_image(data, config)
  except imaging.ImageError as e:
    assert e.error_type and str(e), f'empty ImageError: {e!r}'
    return e.error_type
  side = config.image_size
  assert isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8, pixels
  assert pixels.shape == (side, side, 3), pixels.shape
  return 'decoded'


def check_image(mutant: Mutant,
                config: imaging.DecodeConfig = DECODE_CONFIG) -> List[str]:
  return [decode_label(mutant.data, config)]


def _check_shard(results, mutant: Mutant) -> List[str]:
  labels = []
  for result in results:
    if isinstance(result, ImageRecord):
      assert isinstance(result.key, str) and result.source == 'shard'
      assert isinstance(result.data, bytes)
      assert len(result.data) <= READ_LIMIT, len(result.data)
      labels.append(f'image:{decode_label(result.data)}')
    else:
      assert isinstance(result, ErrorRecord), result
      assert result.stage == 'read' and result.source == 'shard', result
      # The key may be empty: a tar member may be named '' (reported).
      assert isinstance(result.key, str), result
      assert result.error_type and result.message, result
      labels.append(f'read:{result.error_type}')
  if mutant.strict:
    # Nothing silently lost: fewer outcomes than images only with an error.
    assert len(labels) >= mutant.images or any(
        label.startswith('read:') for label in labels), (
            f'{len(labels)} results for {mutant.images} images and no error')
  return labels


def check_tfrecord(mutant: Mutant) -> List[str]:
  return _check_shard(shard_readers.iter_tfrecord_images(
      io.BytesIO(mutant.data), 'shard', image_feature='image/encoded',
      key_feature='image/filename', label_feature='image/class/label',
      max_record_bytes=READ_LIMIT), mutant)


def check_tar(mutant: Mutant) -> List[str]:
  return _check_shard(shard_readers.iter_webdataset_images(
      io.BytesIO(mutant.data), 'shard', max_member_bytes=READ_LIMIT), mutant)


CHECKS = {'image': check_image, 'tfrecord': check_tfrecord, 'tar': check_tar}


# --------------------------------------------------------------------------


def failures_dir() -> str:
  return os.environ.get('FEATURIZE_FUZZ_FAILURES', os.path.join(
      tempfile.gettempdir(), 'featurize-fuzz-failures'))


def save_failure(target: str, mutant: Mutant, why: str) -> str:
  """Writes the input (the last failure of a target is the shrunk one)."""
  folder = failures_dir()
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f'{target}-last-failure.bin')
  with open(path, 'wb') as f:
    f.write(mutant.data)
  with open(path[:-len('.bin')] + '.txt', 'w') as f:
    f.write(f'{why}\n{mutant!r}\n')
  return path


def run_one(target: str, mutant: Mutant,
            check: Callable[[Mutant], List[str]] = None) -> List[str]:
  """Checks one input; raises AssertionError (input saved) on a failure."""
  check = check or CHECKS[target]
  STATS[target]['inputs'] += 1
  start = time.perf_counter()
  try:
    with PeakRss() as peak:
      with time_limit(TIME_LIMIT_S):
        labels = check(mutant)
  except FuzzTimeout as e:
    why, cause = f'hang: {e}', e
  except AssertionError as e:
    why, cause = f'invariant broken: {e}', e
  except Exception as e:  # pylint: disable=broad-except
    why, cause = f'raised {type(e).__name__}: {e}', e
  else:
    worst, seconds = WORST[target], time.perf_counter() - start
    if seconds > worst['seconds']:
      worst['seconds'], worst['slowest'] = seconds, mutant
    worst['rss_mb'] = max(worst['rss_mb'], peak.growth_mb)
    if peak.growth_mb <= RSS_LIMIT_MB:
      STATS[target].update(labels)
      return labels
    why, cause = (f'peak RSS grew by {peak.growth_mb:.0f} MB (limit '
                  f'{RSS_LIMIT_MB} MB)'), None
  STATS[target]['failures'] += 1
  path = save_failure(target, mutant, why)
  raise AssertionError(f'{why}\n{mutant!r}\ninput saved to {path}') from cause
