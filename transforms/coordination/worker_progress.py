"""A local job's progress, counted where the work happens, for the
launcher's progress line (``pipeline/progress_line.py``).

Beam's metrics reach the launcher only when a local runner's job is over,
so each worker process also keeps a few running totals and writes them,
at most a few times a second, to ``<FEATURIZE_PROGRESS_DIR>/<pid>.json``;
the launcher sums the files. Worker processes inherit the variable; where
it is unset (Dataflow, Flink) ``add`` returns at once.
"""
import collections
import json
import os
import threading
import time

ENV = 'FEATURIZE_PROGRESS_DIR'
SHARDS = 'shards'   # shards read to the end
IMAGES = 'images'   # images written: a feature record or an error line
ERRORS = 'errors'   # error lines written
_INTERVAL_S = 0.2

_lock = threading.Lock()
_counts: collections.Counter[str] = collections.Counter()
_folder = None  # a new folder is a new job: its totals start at zero
_written_at = 0.0


def _write(folder: str) -> None:
  global _written_at
  _written_at = time.monotonic()
  path = os.path.join(folder, f'{os.getpid()}.json')
  temp = f'{path}.tmp'
  try:
    with open(temp, 'w') as f:
      json.dump(_counts, f)
    os.replace(temp, path)  # the launcher never reads half a file
  except OSError:  # The launcher has gone: progress is not worth failing.
    pass


def add(name: str, count: int = 1) -> None:
  """Adds to a running total of this process."""
  folder = os.environ.get(ENV)
  if not folder:
    return
  global _folder
  with _lock:
    if folder != _folder:
      _folder = folder
      _counts.clear()
    _counts[name] += count
    if time.monotonic() - _written_at >= _INTERVAL_S:
      _write(folder)


def flush() -> None:
  """Writes this process's totals now (at the end of a bundle)."""
  folder = os.environ.get(ENV)
  if folder and folder == _folder:
    with _lock:
      _write(folder)


def read_totals(folder: str) -> collections.Counter:
  """The totals of every process that reported into ``folder``."""
  totals: collections.Counter[str] = collections.Counter()
  for name in os.listdir(folder):
    if name.endswith('.json'):
      try:
        with open(os.path.join(folder, name)) as f:
          totals.update(json.load(f))
      except (OSError, ValueError):
        pass  # replaced while being read: the next look sees it
  return totals
