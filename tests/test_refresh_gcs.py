"""``featurize refresh`` with a gs:// dataset, against the GCS API server
of the test session.

That server (gcp-storage-emulator) does not enforce generation
preconditions, so the pointer's conditional write and the lock's
create-if-absent are exercised here but proven only on local disk
(tests/test_refresh.py); a server that enforces them is still to come.
"""
import os
import subprocess
import sys

from pipeline import demo
from pipeline.refresh import versions
from tests.conftest import BUCKET
from tests.test_refresh import IMAGES_PER_SHARD, JOB, write_shard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
