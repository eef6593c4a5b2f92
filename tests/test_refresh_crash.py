"""A refresh killed (SIGKILL of its whole process tree) at several points:
the latest version stays untouched and readable, and the next refresh
(taking over the dead one's lock) leaves the dataset as one uninterrupted
refresh would, with no leftover file."""
import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline import options
from pipeline.refresh import lock, publish, run as refresh_run, versions
from tests.test_refresh import LOCAL, JOB, do_refresh, read_version, write_shard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _staged(root, pattern):
  return glob.glob(os.path.join(root, versions.STAGING, '*', pattern))


KILL_POINTS = {
    # The plan is written; the pipeline is starting and reading shards.
    'after_plan': lambda root: _staged(root, publish.PLAN_FILE),
    # Per-shard files are being written.
    'writing': lambda root: _staged(root, os.path.join(publish.TEMP,
                                                       'features-*')),
    # Every file and the manifest are in place; the pointer is not yet.
    'before_pointer': lambda root: len(versions.list_versions(root)) == 2,
}


def _shards(folder, count, start=0):
  os.makedirs(folder, exist_ok=True)
  for index in range(start, start + count):
    write_shard(folder, index, corrupt=index == 1)
  return os.path.join(folder, '*.tfrecord')


def _listed_files(root):
  listed = set()
  for name in versions.list_versions(root):
    manifest = versions.read_manifest(root, name)
    listed.update(versions.files_of(manifest)
                  + versions.files_of(manifest, 'errors'))
  return {versions.path(root, p) for p in listed}


@pytest.mark.parametrize('point', sorted(KILL_POINTS))
def test_a_killed_refresh_leaves_the_latest_version_and_is_completed(
    point, tmp_path):
  shards = str(tmp_path / 'shards')
  pattern = _shards(shards, 3)
  root = str(tmp_path / 'features')
  first = do_refresh(root, pattern).manifest
  before = read_version(root, first)
  _shards(shards, 3, start=3)

  env = {**os.environ, 'FEATURIZE_TEST_PAUSE_BEFORE_POINTER': '120'}
  process = subprocess.Popen(
      [sys.executable, '-m', 'pipeline.cli', 'refresh', '--config', LOCAL,
       '--input', pattern, '--dataset', root, *JOB], cwd=ROOT, env=env,
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
      start_new_session=True)
  deadline = time.monotonic() + 120
  while not KILL_POINTS[point](root):
    assert process.poll() is None, process.stderr.read()[-3000:]
    assert time.monotonic() < deadline, f'never reached {point}'
    time.sleep(0.02)
  os.killpg(process.pid, signal.SIGKILL)
  process.wait()

  # The latest version is untouched and reads whole.
  assert versions.read_pointer(root).version == first['version']
  after = read_version(root, versions.latest(root))
  assert set(after[0]) == set(before[0]) and after[1] == before[1]
  assert os.path.exists(os.path.join(root, lock.LOCK))  # the dead one's

  with pytest.raises(lock.Locked):
    do_refresh(root, pattern)
  parsed = options.parse_run_args(
      ['--config', LOCAL, '--input', pattern, '--output', root, *JOB])
  done = refresh_run.refresh(parsed.job, parsed.beam_args, break_lock=True,
                             log=lambda _: None)
  assert done.published and done.images_read == 9  # the 3 new shards

  # As one uninterrupted refresh over the same inputs.
  reference = str(tmp_path / 'reference')
  ref = do_refresh(reference, pattern)
  ours, our_errors = read_version(root, done.manifest)
  theirs, their_errors = read_version(reference, ref.manifest)
  assert set(ours) == set(theirs)
  for key in theirs:
    np.testing.assert_allclose(ours[key][0], theirs[key][0], rtol=1e-5,
                               atol=1e-5)
  assert sorted(e['key'] for e in our_errors) == sorted(
      e['key'] for e in their_errors)

  # No leftovers: nothing staged, no lock, no temporary or unlisted file.
  assert not glob.glob(os.path.join(root, versions.STAGING, '*'))
  assert not os.path.exists(os.path.join(root, lock.LOCK))
  on_disk = {p for p in glob.glob(os.path.join(root, '**'), recursive=True)
             if os.path.isfile(p)}
  expected = _listed_files(root) | {
      versions.path(root, versions.POINTER)} | {
          versions.manifest_path(root, n)
          for n in versions.list_versions(root)}
  assert on_disk == expected
  assert [n.split('-')[0] for n in versions.list_versions(root)] == [
      'v000001', 'v000002']
