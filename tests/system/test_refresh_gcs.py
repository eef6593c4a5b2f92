"""``featurize refresh`` with a gs:// dataset, against the GCS API server
of the test session (fake-gcs-server, which enforces generation
preconditions as GCS does): refreshes, two refreshes at once, a stale lock
taken over by one of two takers, and a pointer that moved under a refresh.
The kill tests on gs:// are in tests/system/test_refresh_crash.py.
"""
import json
import os
import subprocess
import sys
import time

import pytest

from pipeline import demo
from pipeline.refresh import versions
from tests.support.gcs_server import BUCKET
from tests.support.paths import ROOT
from tests.support.refresh_data import IMAGES_PER_SHARD, JOB, write_shard
from transforms.coordination import output_lock as lock


DATASET = f'gs://{BUCKET}/refresh/features'
PATTERN = f'gs://{BUCKET}/refresh/shards/*.tfrecord'


def _refresh(gcs, tmp_path, *extra):
  env = {**os.environ, **gcs.env, 'TMPDIR': str(tmp_path)}
  return subprocess.run(
      [sys.executable, '-m', 'pipeline.cli', 'refresh', '--config',
       demo.LOCAL_CONFIG, '--input', PATTERN, '--dataset', DATASET, *JOB,
       *extra], capture_output=True, text=True, env=env, cwd=ROOT)


def _upload_shard(gcs, folder, index):
  path = write_shard(str(folder), index)
  gcs.bucket.blob(f'refresh/shards/{os.path.basename(path)}'
                  ).upload_from_filename(path)


def test_a_gs_dataset_is_refreshed_like_a_local_one(gcs_env, tmp_path):
  gcs = gcs_env
  for index in range(3):
    _upload_shard(gcs, tmp_path, index)
  first = _refresh(gcs, tmp_path)
  assert first.returncode == 0, first.stderr[-3000:]
  assert 'plan: 0 shards reused (0 images), 3 new' in first.stdout
  pointer = versions.read_pointer(DATASET)
  assert pointer.version.startswith('v000001-') and pointer.generation
  v1 = versions.read_manifest(DATASET, pointer.version)
  assert v1['counts']['images_in'] == 3 * IMAGES_PER_SHARD
  for name in versions.files_of(v1):
    assert gcs.bucket.blob(f'refresh/features/{name}').exists(), name

  _upload_shard(gcs, tmp_path, 3)
  second = _refresh(gcs, tmp_path)
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'plan: 3 shards reused (9 images), 1 new' in second.stdout
  moved = versions.read_pointer(DATASET)
  assert moved.generation != pointer.generation
  v2 = versions.read_manifest(DATASET, moved.version)
  assert v2['parent'] == v1['version']
  assert v2['counts']['images_processed'] == IMAGES_PER_SHARD
  assert set(versions.files_of(v1)) < set(versions.files_of(v2))
  assert not list(gcs.bucket.client.list_blobs(
      gcs.bucket, prefix='refresh/features/.staging/'))
  # The lock object was created and released by the refreshes.
  assert not gcs.bucket.blob('refresh/features/.lock').exists()

  # The TensorFlow-free reader and `featurize files` follow the pointer on
  # gs:// too (in processes of their own: the reader's tfrecord package
  # cannot share one with the TensorFlow this one has loaded).
  env = {**os.environ, **gcs.env}
  read = subprocess.run(
      [sys.executable, '-m', 'pipeline.read_features', DATASET], cwd=ROOT,
      capture_output=True, text=True, env=env, check=True)
  keys = sorted(line.split('\t')[0] for line in read.stdout.splitlines())
  assert len(keys) == len(set(keys)) == v2['counts']['features']
  assert all(line.split('\t')[1] == '[128]'
             for line in read.stdout.splitlines())  # block2_pool, avg
  files = subprocess.run(
      [sys.executable, '-m', 'pipeline.cli', 'files', DATASET, '--version',
       v1['version']], cwd=ROOT, capture_output=True, text=True, env=env,
      check=True)
  assert files.stdout.split() == [
      versions.path(DATASET, p) for p in versions.files_of(v1)]


def test_a_second_refresh_refuses_while_one_runs(gcs_env, tmp_path):
  gcs = gcs_env
  root = f'gs://{BUCKET}/concurrent/features'
  pattern = f'gs://{BUCKET}/concurrent/shards/*.tfrecord'
  for index in range(2):
    path = write_shard(str(tmp_path), index)
    gcs.bucket.blob(f'concurrent/shards/{os.path.basename(path)}'
                    ).upload_from_filename(path)
  command = [sys.executable, '-m', 'pipeline.cli', 'refresh', '--config',
             demo.LOCAL_CONFIG, '--input', pattern, '--dataset', root, *JOB]
  env = {**os.environ, **gcs.env, 'TMPDIR': str(tmp_path)}
  # The first one holds its lock until it has published: made to wait
  # there, it is surely running when the second starts.
  first = subprocess.Popen(
      command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, env={**env, 'FEATURIZE_TEST_PAUSE_AT': 'before_pointer:15'})
  lock_blob = gcs.bucket.blob('concurrent/features/.lock')
  deadline = time.monotonic() + 60
  while not lock_blob.exists():
    assert first.poll() is None, first.communicate()[1][-3000:]
    assert time.monotonic() < deadline
    time.sleep(0.05)
  holder = json.loads(lock_blob.download_as_bytes())
  second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env=env)
  assert second.returncode == 1
  assert (f'being refreshed by refresh {holder["holder"]} (host '
          f'{holder["host"]}, pid {holder["pid"]}') in second.stderr
  assert first.pid == holder['pid']
  out, err = first.communicate(timeout=120)
  assert first.returncode == 0, err[-3000:]
  assert 'plan: 0 shards reused (0 images), 2 new' in out
  assert not lock_blob.exists()
  assert versions.read_pointer(root).version.startswith('v000001-')


def test_a_stale_lock_goes_to_one_taker_only(gcs_env):
  root = f'gs://{BUCKET}/stale-lock/features'
  lock.acquire(root, 'dead-refresh')
  target = versions.path(root, lock.LOCK)
  _, stale_generation = lock.read(target)
  # Two refreshes find the lock stale; the first takes it over...
  assert lock.acquire(root, 'taker-1', timeout_s=0)['holder'] == 'taker-1'
  # ...so the second's write, conditioned on the generation it read as
  # stale, fails on the server, and it must not take the lock.
  assert not lock.create(target, b'{}', stale_generation)
  assert not lock.create(target, b'{}', None)
  with pytest.raises(lock.Locked, match='taker-1'):
    lock.acquire(root, 'taker-2')
  lock.release(root, 'taker-1')
  assert lock.read(target) == (None, None)


def test_a_pointer_that_moved_is_not_overwritten(gcs_env):
  root = f'gs://{BUCKET}/moved-pointer/features'
  versions.swap_pointer(root, 'v000001-20261129T000000Z', None)
  planned = versions.read_pointer(root)
  # Another refresh published after this one planned against v000001.
  versions.swap_pointer(root, 'v000002-20261129T010000Z', planned)
  with pytest.raises(versions.PointerMoved):
    versions.swap_pointer(root, 'v000002-20261129T020000Z', planned)
  with pytest.raises(versions.PointerMoved):  # nor created twice
    versions.swap_pointer(root, 'v000001-20261129T030000Z', None)
  assert versions.read_pointer(root).version == 'v000002-20261129T010000Z'
