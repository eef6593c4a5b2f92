"""``featurize run`` under faults, each ending in a complete output or a
loud failure, never a silent loss:

* killed (SIGKILL of its whole process tree) while reading, writing and
  publishing, then the same command again into the same folder: it
  completes, equal to an uninterrupted run, with no leftover file;
* two runs into one folder at once: the second is refused at launch;
* the output's disk fills up: a clear failure, no ``_SUCCESS``, no file
  under a final name;
* shards deleted, truncated and replaced between the launch's match and
  their read: error lines for what was lost, the rest completes;
* a worker process of the multi-process DirectRunner killed mid-bundle:
  the run fails loudly (the FnApiRunner does not retry bundles; its
  channel to the worker breaks) with no ``_SUCCESS`` and no file under a
  final name, and the same command then completes.
"""
import glob
import json
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.support.outputs import read_errors, read_outputs
from tests.support.paths import ROOT
from tests.support.refresh_data import JOB, LOCAL, write_shard
from transforms.coordination import fault_points




@pytest.fixture
def shards(tmp_path):
  folder = tmp_path / 'shards'
  folder.mkdir()
  for index in range(4):
    write_shard(str(folder), index, corrupt=index == 2)
  return str(folder / '*.tfrecord')


def _command(pattern, out, *extra):
  return [sys.executable, '-m', 'pipeline.cli', 'run', '--config', LOCAL,
          '--input', pattern, '--output', out, *JOB, *extra]


def _start(command, pause=None, **popen):
  """Starts featurize; with ``pause`` (point, seconds, marker) it stops
  there (``transforms/coordination/fault_points.py``)."""
  env = dict(os.environ)
  if pause:
    env[fault_points.ENV] = ':'.join(str(p) for p in pause)
  return subprocess.Popen(command, cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          start_new_session=True, **popen)


def _wait_for(path, process, timeout=120):
  deadline = time.monotonic() + timeout
  while not os.path.exists(path):
    if process.poll() is not None:
      raise AssertionError(process.communicate()[1][-3000:])
    assert time.monotonic() < deadline, f'{path} never appeared'
    time.sleep(0.02)


def _finished(out):
  """What a finished run's folder must hold, and nothing else."""
  with open(os.path.join(out, 'manifest.json')) as f:
    manifest = json.load(f)
  return manifest, {'_SUCCESS', 'manifest.json'} | {
      s['path'] for s in manifest['feature_shards'] + manifest['error_shards']}


def _same_output(out, reference):
  ours, theirs = read_outputs(out), read_outputs(reference)  # no duplicates
  assert set(ours) == set(theirs)
  for key, (features, label) in theirs.items():
    np.testing.assert_allclose(ours[key][0], features, rtol=1e-5, atol=1e-5)
    assert ours[key][1] == label
  def order(e):
    return json.dumps(e, sort_keys=True)
  assert sorted(read_errors(out), key=order) == sorted(read_errors(reference),
                                                       key=order)
  assert _finished(out)[0]['counts'] == _finished(reference)[0]['counts']


@pytest.fixture
def reference(shards, tmp_path):
  out = str(tmp_path / 'reference')
  done = subprocess.run(_command(shards, out), cwd=ROOT, capture_output=True,
                        text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  return out


@pytest.mark.parametrize('point', ['reading', 'writing', 'publish_renamed'])
def test_a_killed_run_is_completed_by_the_same_command(point, shards,
                                                       reference, tmp_path):
  out = str(tmp_path / 'out')
  marker = str(tmp_path / 'paused')
  process = _start(_command(shards, out), (point, 120, marker))
  _wait_for(marker, process)
  os.killpg(process.pid, signal.SIGKILL)
  process.wait()
  assert not os.path.exists(os.path.join(out, '_SUCCESS'))
  assert os.path.exists(os.path.join(out, '.lock'))  # the dead run's
  if point == 'publish_renamed':  # some files have their final names
    assert glob.glob(os.path.join(out, 'features-*'))

  again = subprocess.run(_command(shards, out), cwd=ROOT,
                         capture_output=True, text=True)
  assert again.returncode == 0, again.stderr[-3000:]
  _same_output(out, reference)
  # No temporary folder, lock or unlisted file is left.
  assert set(os.listdir(out)) == _finished(out)[1]


def test_a_second_run_into_the_folder_is_refused_while_one_works(
    shards, tmp_path):
  out = str(tmp_path / 'out')
  marker = str(tmp_path / 'paused')
  # The first run holds the lock for a minute: long enough for the second
  # to start and be refused on a loaded machine (its imports alone took
  # over 10 s under a parallel test run).
  first = _start(_command(shards, out), ('publish_renamed', 60, marker))
  _wait_for(marker, first)
  with open(os.path.join(out, '.lock')) as f:
    holder = json.load(f)
  assert holder['pid'] == first.pid
  second = subprocess.run(_command(shards, out), cwd=ROOT,
                          capture_output=True, text=True)
  assert second.returncode == 1
  assert (f'featurize: error: {out} is being written by run '
          f'{holder["holder"]} (host {holder["host"]}, pid {first.pid}'
          ) in second.stderr
  assert second.stderr.count('\n') == 1  # one line, no traceback
  _, err = first.communicate(timeout=120)
  assert first.returncode == 0, err[-3000:]
  assert set(os.listdir(out)) == _finished(out)[1]  # the lock is released


def test_a_full_disk_fails_the_run_loudly(shards, tmp_path):
  out = str(tmp_path / 'out')
  # Larger features (block1_pool, no pooling: 256 KB an image at 64 px)
  # than the 1 MB the process may write to any one file.
  limit = 1 << 20
  command = _command(shards, out, '--layer', 'block1_pool', '--pooling',
                     'none', '--image-size', '64')
  done = subprocess.run(
      command, cwd=ROOT, capture_output=True, text=True,
      preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE,
                                            (limit, limit)))
  assert done.returncode == 4  # the job failed
  assert done.stderr.count('\n') == 1, done.stderr  # one line, quiet start
  last = done.stderr.strip()
  assert last.startswith('featurize: error: ') and 'File too large' in last
  assert 'WriteBundleFiles' in last and '--verbose' in last
  assert not os.path.exists(os.path.join(out, '_SUCCESS'))
  assert not glob.glob(os.path.join(out, 'features-*'))
  assert not glob.glob(os.path.join(out, 'errors-*'))
  assert not os.path.exists(os.path.join(out, '.lock'))  # released


def test_shards_changed_after_the_match_end_as_error_lines(shards, tmp_path):
  out = str(tmp_path / 'out')
  folder = os.path.dirname(shards)
  marker = str(tmp_path / 'paused')
  process = _start(_command(shards, out), ('reading', 5, marker))
  _wait_for(marker, process)
  os.remove(os.path.join(folder, 'part-00000.tfrecord'))
  truncated = os.path.join(folder, 'part-00001.tfrecord')
  with open(truncated, 'r+b') as f:
    f.truncate(os.path.getsize(truncated) // 2)
  write_shard(folder, 3, variant=1)  # replaced by other photos
  _, err = process.communicate(timeout=120)
  assert process.returncode == 0, err[-3000:]
  manifest, _ = _finished(out)
  errors = read_errors(out)
  by_source = {}
  for error in errors:
    by_source.setdefault(os.path.basename(error['source']), []).append(error)
  gone = by_source['part-00000.tfrecord']
  assert [e['error_type'] for e in gone] == ['unreadable_shard']
  assert 'No such file' in gone[0]['message'] or 'not found' in gone[0][
      'message'].lower()
  assert any(e['error_type'] == 'truncated_record'
             for e in by_source['part-00001.tfrecord'])
  keys = set(read_outputs(out))
  assert any(k.startswith('shard3-v1/') for k in keys)  # the new photos
  assert not any(k.startswith('shard3-v0/') for k in keys)
  assert manifest['counts']['images_in'] == (
      manifest['counts']['features'] + manifest['counts']['errors'])


def test_a_worker_killed_mid_bundle_fails_the_run_loudly(shards, reference,
                                                         tmp_path):
  out = str(tmp_path / 'out')
  marker = str(tmp_path / 'paused')
  command = _command(shards, out, '--direct_running_mode=multi_processing',
                     '--direct_num_workers=2')
  process = _start(command, ('writing', 60, marker))
  _wait_for(marker, process)
  with open(marker) as f:
    worker = int(f.read())  # the worker process that paused there
  assert worker != process.pid
  os.kill(worker, signal.SIGKILL)
  _, err = process.communicate(timeout=120)
  assert process.returncode == 4  # the job failed
  assert ('featurize: error: a Beam worker process ended in the middle of '
          'its work') in err.strip().splitlines()[-1]
  assert not os.path.exists(os.path.join(out, '_SUCCESS'))
  assert not glob.glob(os.path.join(out, 'features-*'))
  assert not os.path.exists(os.path.join(out, '.lock'))

  again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  assert again.returncode == 0, again.stderr[-3000:]
  _same_output(out, reference)
  assert set(os.listdir(out)) == _finished(out)[1]
