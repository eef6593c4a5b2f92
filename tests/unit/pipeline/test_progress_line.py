"""The local job's progress line: its text, and the times it measures from
the files that worker processes write (``worker_progress``)."""
import collections
import io
import os
import subprocess
import sys
import tempfile
import time

import pytest

from pipeline import progress_line
from pipeline.progress_line import ProgressLine, status_text
from tests.support.paths import ROOT
from transforms.coordination import worker_progress

WORKER = """
from transforms.coordination import worker_progress as w
w.add(w.SHARDS)
w.add(w.IMAGES, 2)
w.add(w.ERRORS)
w.flush()
"""


def test_status_text_tells_shards_images_rate_errors_and_time_left():
  totals = collections.Counter(shards=3, images=120, errors=2)
  # 29 s for 3 of 10 shards: 7 more take 29 * 7 / 3 = 67.7 s.
  assert status_text(totals, 10, 29.0) == (
      '3/10 shards, 120 images (4.1/s), 2 errors, 0:29 elapsed, '
      'about 1:07 left')
  assert status_text({'shards': 1, 'images': 9}, 3, 2000.0) == (
      '1/3 shards, 9 images (0.0/s), 0 errors, 33:20 elapsed, '
      'about 1:06:40 left')


def test_status_text_tells_no_time_left_before_a_shard_or_when_done():
  assert status_text(collections.Counter(), 4, 0.0) == (
      '0/4 shards, 0 images (0.0/s), 0 errors, 0:00 elapsed')
  assert status_text({'images': 50}, 4, 10.0) == (
      '0/4 shards, 50 images (5.0/s), 0 errors, 0:10 elapsed')
  assert status_text({'shards': 4, 'images': 4000, 'errors': 1}, 4,
                     3725.0) == ('4/4 shards, 4000 images (1.1/s), 1 errors, '
                                 '1:02:05 elapsed')


def test_log_interval_comes_from_the_argument_or_the_environment(
    monkeypatch):
  monkeypatch.delenv(progress_line.LOG_EVERY_ENV, raising=False)
  assert ProgressLine(3).log_every_s == progress_line.DEFAULT_LOG_EVERY_S
  monkeypatch.setenv(progress_line.LOG_EVERY_ENV, '2.5')
  assert ProgressLine(3).log_every_s == 2.5
  assert ProgressLine(3, log_every_s=0.5).log_every_s == 0.5


def _wait_for(condition, timeout_s=5.0):
  deadline = time.monotonic() + timeout_s
  while not condition():
    assert time.monotonic() < deadline, 'timed out'
    time.sleep(0.01)


@pytest.fixture
def fast(monkeypatch, tmp_path):
  """Polls every 20 ms, with its folder under ``tmp_path``."""
  monkeypatch.setattr(progress_line, 'REFRESH_S', 0.02)
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
  monkeypatch.setenv(worker_progress.ENV, str(tmp_path / 'outer-job'))
  return tmp_path


def test_first_record_is_timed_from_a_worker_processes_file(fast):
  stream = io.StringIO()
  entered = time.monotonic()
  with ProgressLine(3, log_every_s=0.05, stream=stream) as line:
    folder = os.environ[worker_progress.ENV]
    assert os.path.dirname(folder) == str(fast) and os.path.isdir(folder)
    time.sleep(0.3)
    assert line.first_record_s is None  # nothing written yet
    # A worker process, which inherits the folder from the environment.
    subprocess.run([sys.executable, '-c', WORKER], cwd=ROOT,
                   env=dict(os.environ, PYTHONPATH=ROOT), timeout=30,
                   check=True)
    written_by = time.monotonic() - entered
    _wait_for(lambda: line.first_record_s is not None)
    first = line.first_record_s
    # Seen at the next look after the worker wrote (a look per 20 ms).
    assert 0.3 <= first <= written_by + 1.0
    _wait_for(lambda: '1/3 shards, 2 images' in stream.getvalue())
    worker_progress.add(worker_progress.IMAGES)  # later images: no change
    worker_progress.flush()
    _wait_for(lambda: '1/3 shards, 3 images' in stream.getvalue())
  assert line.first_record_s == first
  assert line.elapsed_s >= first
  lines = stream.getvalue().splitlines()
  assert lines and all(text.startswith('featurize: progress: 0/3 shards, 0 '
                                       'images') or
                       text.startswith('featurize: progress: 1/3 shards, ')
                       for text in lines)
  assert ', 1 errors, ' in lines[-1]
  # The outer job's folder is back, and this job's folder is gone.
  assert os.environ[worker_progress.ENV] == str(fast / 'outer-job')
  assert not os.path.exists(folder)


def test_quiet_shows_nothing_but_still_times(fast, monkeypatch):
  monkeypatch.delenv(worker_progress.ENV)
  stream = io.StringIO()
  with ProgressLine(2, show=False, log_every_s=0.01, stream=stream) as line:
    worker_progress.add(worker_progress.IMAGES)
    worker_progress.flush()
    _wait_for(lambda: line.first_record_s is not None)
  assert stream.getvalue() == ''
  assert worker_progress.ENV not in os.environ
  assert os.listdir(fast) == []


def test_a_terminal_gets_the_live_bar(fast):
  class Terminal(io.StringIO):
    def isatty(self):
      return True

  stream = Terminal()
  with ProgressLine(2, log_every_s=60, stream=stream) as line:
    worker_progress.add(worker_progress.SHARDS)
    worker_progress.add(worker_progress.IMAGES, 7)
    worker_progress.flush()
    _wait_for(lambda: line.first_record_s is not None)
  assert '1/2 shards, 7 images' in stream.getvalue()
  assert 'featurize: progress:' not in stream.getvalue()
