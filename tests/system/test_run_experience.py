"""What a person running ``featurize run`` sees: a quiet start, a progress
line (on a terminal) or periodic lines (in a log), the metrics summary at
the end, and ``--quiet`` / ``--verbose``."""
import collections
import json
import os
import pty
import re
import subprocess
import sys

import pytest

from pipeline import progress_line
from tests.support.paths import ROOT
from tests.support.refresh_data import JOB, LOCAL, write_shard


PROGRESS = re.compile(r'(\d+)/(\d+) shards, (\d+) images \(([\d.]+)/s\), '
                      r'(\d+) errors, (\d+):(\d\d) elapsed')


def test_status_text_says_done_rate_errors_and_time_left():
  totals = collections.Counter(shards=3, images=120, errors=2)
  assert progress_line.status_text(totals, 10, 29.5) == (
      '3/10 shards, 120 images (4.1/s), 2 errors, 0:29 elapsed, about 1:08 '
      'left')
  assert progress_line.status_text(collections.Counter(), 10, 0) == (
      '0/10 shards, 0 images (0.0/s), 0 errors, 0:00 elapsed')
  done = progress_line.status_text(collections.Counter(shards=10, images=5), 10,
                              3725)
  assert done.endswith('1:02:05 elapsed')  # nothing left to estimate


@pytest.fixture(scope='module')
def shards(tmp_path_factory):
  folder = tmp_path_factory.mktemp('shards')
  for index in range(4):
    write_shard(str(folder), index, corrupt=index == 1)
  return str(folder / '*.tfrecord')


def _run(shards, out, *extra, stderr=subprocess.PIPE, env=None):
  # As from a user's shell: not with the TensorFlow log level that
  # importing JAX in this test process sets (it hides TensorFlow's lines).
  environ = {k: v for k, v in os.environ.items()
             if k != 'TF_CPP_MIN_LOG_LEVEL'}
  return subprocess.run(
      [sys.executable, '-m', 'pipeline.cli', 'run', '--config', LOCAL,
       '--input', shards, '--output', out, *JOB, *extra], cwd=ROOT,
      stdout=subprocess.PIPE, stderr=stderr, text=True,
      env={**environ, **(env or {})})


def test_a_logged_run_is_quiet_but_for_progress_and_its_summary(shards,
                                                                tmp_path):
  out = str(tmp_path / 'out')
  done = _run(shards, out, env={progress_line.LOG_EVERY_ENV: '0.3'})
  assert done.returncode == 0, done.stderr
  # No TensorFlow, absl or Beam start-up lines: only progress lines.
  lines = done.stderr.splitlines()
  assert lines and all(line.startswith('featurize: progress: ')
                       for line in lines), (
      done.stderr)
  seen = [PROGRESS.search(line).groups() for line in lines]
  assert all(int(total) == 4 for _, total, *_ in seen)
  images = [int(s[2]) for s in seen]
  assert images == sorted(images)  # running totals
  with open(os.path.join(out, 'manifest.json')) as f:
    counts = json.load(f)['counts']
  # The summary's metrics agree with the manifest.
  summary = done.stdout
  # (The corrupt record is no image read: it is the one read error.)
  assert f'images: {counts["images_in"] - 1} read, ' in summary
  assert (f'{counts["features"]} feature records and {counts["errors"]} '
          'error lines written (read 1, decode 0, inference 0)') in summary
  assert f'{counts["features"]} featurized' in summary
  timing = re.search(r'featurize: ([\d.]+) s, ([\d.]+) images/s; first '
                     r'record after ([\d.]+) s', summary)
  # Both printed to 0.1 s: a quick run's first record can round to its end.
  assert timing and 0 < float(timing.group(3)) <= float(timing.group(1))
  assert re.search(r'batches of [\d.]+ images, \d+ ms each; decode [\d.]+ '
                   r'ms an image', summary)


def test_quiet_and_verbose(shards, tmp_path):
  quiet = _run(shards, str(tmp_path / 'quiet'), '--quiet',
               env={progress_line.LOG_EVERY_ENV: '0.3'})
  assert quiet.returncode == 0 and quiet.stderr == ''
  # Worker processes start quietly too.
  workers = _run(shards, str(tmp_path / 'workers'), '--quiet',
                 '--direct_running_mode=multi_processing',
                 '--direct_num_workers=2')
  assert workers.returncode == 0 and workers.stderr == ''
  verbose = _run(shards, str(tmp_path / 'verbose'), '--verbose', '--quiet')
  assert verbose.returncode == 0
  # TensorFlow's start-up lines: oneDNN's where TensorFlow turns it on
  # (CPUs with AVX-512), the CPU feature guard's on the others.
  assert re.search('oneDNN|cpu_feature_guard', verbose.stderr)
  assert 'INFO' in verbose.stderr  # and Beam's log
  # A failure: one line, or with --verbose the traceback before it.
  missing = str(tmp_path / 'none-*.tfrecord')
  for flags, traceback in (([], False), (['--verbose'], True)):
    failed = _run(missing, str(tmp_path / 'failed'), '--quiet', *flags)
    assert failed.returncode == 2  # usage: the input matches nothing
    last = failed.stderr.strip().splitlines()[-1]
    assert last == (f'featurize: error: --input {missing!r} matches no '
                    'files')
    assert ('Traceback (most recent call last)' in failed.stderr) == (
        traceback)
    if not traceback:
      assert failed.stderr.count('\n') == 1


def test_a_terminal_gets_one_redrawn_progress_line(shards, tmp_path):
  controller, terminal = pty.openpty()
  try:
    done = _run(shards, str(tmp_path / 'out'), stderr=terminal)
  finally:
    os.close(terminal)
  drawn = b''
  while True:
    try:
      chunk = os.read(controller, 65536)
    except OSError:
      break
    if not chunk:
      break
    drawn += chunk
  os.close(controller)
  assert done.returncode == 0
  text = drawn.decode(errors='replace')
  assert '\r' in text and '\x1b[2K' in text  # redrawn in place
  assert '4/4 shards, 13 images' in text
  assert not re.search('oneDNN|cpu_feature_guard', text)  # start-up quiet
