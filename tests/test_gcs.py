"""gs:// end to end: shards, weights and outputs in a real GCS API server.

Everything goes through Beam's FileSystems, as on Dataflow; the server is
``gcp-storage-emulator`` on loopback.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline import demo
from tests import datasets, gcs_server
from tests.test_end_to_end import read_errors, read_outputs, reference_features

BUCKET = 'featurize-test'


@pytest.fixture(scope='module')
def gcs():
  from google.auth.credentials import AnonymousCredentials
  from google.cloud import storage
  with gcs_server.running_server(BUCKET) as host:
    client = storage.Client(credentials=AnonymousCredentials(),
                            project='featurize-test',
                            client_options={'api_endpoint': host})
    yield host, client.bucket(BUCKET)


def _upload_tree(bucket, local_root: str, prefix: str) -> None:
  for folder, _, files in os.walk(local_root):
    for name in files:
      path = os.path.join(folder, name)
      bucket.blob(f'{prefix}/{os.path.relpath(path, local_root)}'
                 ).upload_from_filename(path)


def _download_prefix(bucket, prefix: str, local_root: str) -> list:
  names = []
  for blob in bucket.client.list_blobs(bucket, prefix=prefix + '/'):
    name = blob.name[len(prefix) + 1:]
    names.append(name)
    os.makedirs(os.path.dirname(os.path.join(local_root, name)) or local_root,
                exist_ok=True)
    blob.download_to_filename(os.path.join(local_root, name))
  return sorted(names)


def test_gs_input_weights_and_output(gcs, tmp_path, notop_weights):
  host, bucket = gcs
  ds = datasets.write_dataset(str(tmp_path / 'input'))
  _upload_tree(bucket, str(tmp_path / 'input'), 'input')
  bucket.blob('weights/' + os.path.basename(notop_weights)
             ).upload_from_filename(notop_weights)
  command = [
      sys.executable, '-m', 'pipeline.cli', 'run',
      '--input', f'gs://{BUCKET}/input/**', '--output', f'gs://{BUCKET}/out',
      '--weights', f'gs://{BUCKET}/weights/{os.path.basename(notop_weights)}',
      '--max-error-fraction', '1', '--pooling', 'avg',
      '--config', demo.LOCAL_CONFIG]
  env = gcs_server.client_environment(host)
  # A fresh weight cache (under TMPDIR), so that the copy really happens.
  env['TMPDIR'] = str(tmp_path)
  result = subprocess.run(command, capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
  assert result.returncode == 0, result.stderr[-4000:]
  assert f'gs://{BUCKET}/out' in result.stdout

  local = str(tmp_path / 'out')
  names = _download_prefix(bucket, 'out', local)
  assert names[-1] == 'manifest.json' and '_SUCCESS' in names
  assert not [n for n in names if n.startswith('.temp')]
  records = read_outputs(local)
  assert set(records) == set(ds.images)
  for key in ('files/chelsea.jpg', 'tfrecord/coffee.jpg', 'webdataset/rocket',
              'files/zoo/cmyk.jpg'):
    expected = reference_features(notop_weights, ds.images[key],
                                  pooling='avg')
    np.testing.assert_allclose(records[key][0], expected, rtol=1e-4,
                               atol=1e-4 * max(1.0, np.abs(expected).max()))
  errors = read_errors(local)
  assert sorted(e['error_type'] for e in errors) == sorted(ds.errors.values())
  assert all(e['source'].startswith(f'gs://{BUCKET}/input/') for e in errors)
  manifest = json.load(open(os.path.join(local, 'manifest.json')))
  assert manifest['counts']['features'] == len(ds.images)
  assert manifest['weights']['sha256'] is not None
  # The weights were copied once to the worker's local cache.
  cache = tmp_path / 'featurize-weights' / manifest['weights']['sha256']
  assert (cache / os.path.basename(notop_weights)).is_file()
