"""The progress line of a local job, and the times it tells.

While a job runs on a local runner, one line on the terminal (stderr)
shows shards done of all, images done, images/s, errors so far, time
elapsed and time left, redrawn a few times a second at most, by ``rich``.
Where stderr is no terminal (a log file, a scheduler), a plain line every
``log_every_s`` seconds says the same. Workers count into files
(``transforms/coordination/worker_progress.py``); a thread here sums them.
"""
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Optional

from transforms.coordination import worker_progress

REFRESH_S = 0.25
# Where stderr is a log: a line this often (seconds), or as the variable
# says.
LOG_EVERY_ENV = 'FEATURIZE_PROGRESS_LOG_S'
DEFAULT_LOG_EVERY_S = 10.0


def _clock(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return (f'{hours}:{minutes:02d}:{seconds:02d}' if hours
          else f'{minutes}:{seconds:02d}')


def status_text(totals, shards_total: int, elapsed_s: float) -> str:
  """``3/10 shards, 120 images (41.2/s), 2 errors, 0:29 elapsed, about 1:08
  left`` (time left from the share of shards done)."""
  shards = totals.get(worker_progress.SHARDS, 0)
  images = totals.get(worker_progress.IMAGES, 0)
  rate = images / elapsed_s if elapsed_s > 0 else 0.0
  errors = totals.get(worker_progress.ERRORS, 0)
  text = (f'{shards}/{shards_total} shards, {images} images ({rate:.1f}/s), '
          f'{errors} errors, {_clock(elapsed_s)} elapsed')
  if 0 < shards < shards_total:
    left = elapsed_s * (shards_total - shards) / shards
    text += f', about {_clock(left)} left'
  return text


class ProgressLine:
  """Shows a local job's progress while it runs (a context manager).

  Args:
    shards_total: Shards the job reads.
    show: Draw anything at all (``--quiet`` says no).
    log_every_s: Interval of the plain lines where stderr is no terminal
      (default: ``FEATURIZE_PROGRESS_LOG_S``, or 10 s).

  Attributes:
    first_record_s: Seconds from start to the first image written, once
      seen.
    elapsed_s: Seconds from start to stop.
  """

  def __init__(self, shards_total: int, show: bool = True,
               log_every_s: Optional[float] = None, stream=None):
    self.shards_total = shards_total
    self.show = show
    self.log_every_s = log_every_s or float(
        os.environ.get(LOG_EVERY_ENV, DEFAULT_LOG_EVERY_S))
    self.first_record_s: Optional[float] = None
    self.elapsed_s = 0.0
    self._stream = stream or sys.stderr
    self._done = threading.Event()

  def __enter__(self):
    self._folder = tempfile.mkdtemp(prefix='featurize-progress-')
    self._previous = os.environ.get(worker_progress.ENV)
    # Set before the job starts, so that worker processes inherit it.
    os.environ[worker_progress.ENV] = self._folder
    self._started = time.monotonic()
    self._thread = threading.Thread(target=self._loop, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *unused):
    self._done.set()
    self._thread.join()
    if self._previous is None:
      os.environ.pop(worker_progress.ENV, None)
    else:
      os.environ[worker_progress.ENV] = self._previous
    shutil.rmtree(self._folder, ignore_errors=True)

  def _look(self):
    totals = worker_progress.read_totals(self._folder)
    elapsed = time.monotonic() - self._started
    if self.first_record_s is None and totals.get(worker_progress.IMAGES):
      self.first_record_s = elapsed
    return totals, elapsed

  def _loop(self):
    if self.show and self._stream.isatty():
      self._live()
    else:
      self._plain()

  def _live(self):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn
    bar = Progress(BarColumn(bar_width=24), TextColumn('{task.description}'),
                   console=Console(file=self._stream),
                   refresh_per_second=1 / REFRESH_S, transient=False)
    with bar:
      task = bar.add_task('starting', total=self.shards_total)
      while True:
        stopping = self._done.wait(REFRESH_S)
        totals, elapsed = self._look()
        self.elapsed_s = elapsed
        bar.update(task, completed=totals.get(worker_progress.SHARDS, 0),
                   description=status_text(totals, self.shards_total,
                                           elapsed))
        if stopping:
          return

  def _plain(self):
    last_line = time.monotonic()
    while True:
      stopping = self._done.wait(REFRESH_S)
      totals, elapsed = self._look()
      self.elapsed_s = elapsed
      if self.show and not stopping and (
          time.monotonic() - last_line >= self.log_every_s):
        last_line = time.monotonic()
        print(f'featurize: progress: '
              f'{status_text(totals, self.shards_total, elapsed)}',
              file=self._stream, flush=True)
      if stopping:
        return
