"""A refresh killed (SIGKILL of its whole process tree) at several points,
on local disk and on the GCS server: the latest version stays untouched and
readable, and the next refresh (taking over the dead one's lock) leaves the
dataset as one uninterrupted refresh would, with no leftover file."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from apache_beam.io.filesystems import FileSystems

from pipeline import options
from pipeline.read_features import feature_files
from pipeline.refresh import (publish_version as publish,
                              refresh_job as refresh_run, versions)
from tests.support.gcs_server import BUCKET
from tests.support.paths import ROOT
from tests.support.refresh_data import LOCAL, JOB, do_refresh, write_shard
from transforms.coordination import output_lock as lock
from transforms.read.tfrecord_framing import iter_records




def _match(pattern):
  return {m.path for m in FileSystems.match([pattern])[0].metadata_list}


def _staged(root, pattern):
  return _match(versions.path(root, versions.STAGING, '*', pattern))


KILL_POINTS = {
    # The plan is written; the pipeline is starting and reading shards.
    'after_plan': lambda root: _staged(root, publish.PLAN_FILE),
    # Per-shard files are being written.
    'writing': lambda root: _staged(root, f'{publish.TEMP}/features-*'),
    # Every file and the manifest are in place; the pointer is not yet.
    'before_pointer': lambda root: len(versions.list_versions(root)) == 2,
}


def _shards(folder, count, start=0):
  os.makedirs(folder, exist_ok=True)
  for index in range(start, start + count):
    write_shard(folder, index, corrupt=index == 1)
  return os.path.join(folder, '*.tfrecord')


def read_dataset(root, version=None):
  """A version's feature records and error keys, through its manifest, on
  any filesystem.

  (This process has TensorFlow loaded, which the TensorFlow-free reader's
  ``tfrecord`` package cannot share it with; tests/system/test_refresh_gcs.py
  runs that reader on gs:// in a process of its own.)
  """
  import tensorflow as tf
  records = {}
  for path in feature_files(root, version):
    with FileSystems.open(path) as f:
      for framed in iter_records(f, max_record_bytes=1 << 30):
        example = tf.train.Example.FromString(framed.data).features.feature
        key = example['key'].bytes_list.value[0].decode()
        assert key not in records, f'duplicate key {key}'
        records[key] = np.array(example['features'].float_list.value)
  errors = []
  for path in feature_files(root, version, 'errors'):
    with FileSystems.open(path) as f:
      errors += [json.loads(line)['key'] for line in f.read().splitlines()]
  return records, sorted(errors)


def _listed_files(root):
  listed = set()
  for name in versions.list_versions(root):
    manifest = versions.read_manifest(root, name)
    listed.update(versions.files_of(manifest)
                  + versions.files_of(manifest, 'errors'))
  return {versions.path(root, p) for p in listed}


@pytest.fixture(params=['local', 'gcs'])
def storage(request, tmp_path):
  """Where the dataset lives: a local folder or the GCS server's bucket."""
  if request.param == 'local':
    return str(tmp_path / 'features'), {}
  gcs = request.getfixturevalue('gcs_env')
  return f'gs://{BUCKET}/crash/{uuid.uuid4().hex[:8]}/features', gcs.env


@pytest.mark.parametrize('point', sorted(KILL_POINTS))
def test_a_killed_refresh_leaves_the_latest_version_and_is_completed(
    point, storage, tmp_path):
  root, env = storage
  shards = str(tmp_path / 'shards')
  pattern = _shards(shards, 3)
  first = do_refresh(root, pattern).manifest
  before = read_dataset(root)
  _shards(shards, 3, start=3)

  process = subprocess.Popen(
      [sys.executable, '-m', 'pipeline.cli', 'refresh', '--config', LOCAL,
       '--input', pattern, '--dataset', root, *JOB], cwd=ROOT,
      env={**os.environ, **env,
           'FEATURIZE_TEST_PAUSE_AT': 'before_pointer:120'},
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
  assert _same(read_dataset(root), before)
  # The dead one's lock: it ran its job in its own process tree here, so
  # the next refresh sees that it is gone and takes the lock over at once.
  dead, _ = lock.read(lock.lock_path(root))
  assert dead['pid'] == process.pid and dead['watch']
  assert lock.holder_is_gone(dead)

  parsed = options.parse_run_args(
      ['--config', LOCAL, '--input', pattern, '--output', root, *JOB])
  done = refresh_run.refresh(parsed.job, parsed.beam_args,
                             log=lambda _: None)
  assert done.published and done.images_read == 9  # the 3 new shards

  # As one uninterrupted refresh over the same inputs.
  reference = str(tmp_path / 'reference')
  do_refresh(reference, pattern)
  assert _same(read_dataset(root), read_dataset(reference))

  # No leftovers: nothing staged, no lock, no temporary or unlisted file.
  assert not _match(versions.path(root, versions.STAGING, '**'))
  assert not FileSystems.exists(versions.path(root, lock.LOCK))
  expected = _listed_files(root) | {
      versions.path(root, versions.POINTER)} | {
          versions.manifest_path(root, n)
          for n in versions.list_versions(root)}
  assert _match(versions.path(root, '**')) == expected
  assert [n.split('-')[0] for n in versions.list_versions(root)] == [
      'v000001', 'v000002']


def _same(ours, theirs) -> bool:
  (our_records, our_errors), (their_records, their_errors) = ours, theirs
  assert set(our_records) == set(their_records)
  for key, features in their_records.items():
    np.testing.assert_allclose(our_records[key], features, rtol=1e-5,
                               atol=1e-5, err_msg=key)
  assert our_errors == their_errors
  return True
