"""gs:// end to end: shards, weights and outputs in a real GCS API server.

Everything goes through Beam's FileSystems and the google-cloud-storage
client, as on Dataflow; the server is ``fake-gcs-server`` on loopback,
and the client authenticates with application-default credentials that
refresh against a token endpoint on loopback.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline import demo
from tests.support import datasets, image_zoo
from tests.support.gcs_server import BUCKET
from tests.support.outputs import featurize, read_errors, read_outputs
from tests.support.paths import ROOT


WEIGHTS_NAME = 'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'


def _upload_tree(bucket, local_root: str, prefix: str) -> None:
  for folder, _, files in os.walk(local_root):
    for name in files:
      path = os.path.join(folder, name)
      bucket.blob(f'{prefix}/{os.path.relpath(path, local_root)}'
                 ).upload_from_filename(path)


def _download_prefix(bucket, prefix: str, local_root: str) -> dict:
  """Downloads every object under ``prefix``; returns name -> generation."""
  generations = {}
  for blob in bucket.client.list_blobs(bucket, prefix=prefix + '/'):
    name = blob.name[len(prefix) + 1:]
    generations[name] = blob.generation
    os.makedirs(os.path.dirname(os.path.join(local_root, name)) or local_root,
                exist_ok=True)
    blob.download_to_filename(os.path.join(local_root, name))
  return generations


def _featurize_process(gcs, tmp_path, *args):
  """``featurize run`` in a process of its own, pointed at the server."""
  env = {**os.environ, **gcs.env,
         # A fresh weight cache (under TMPDIR), so that the copy happens.
         'TMPDIR': str(tmp_path)}
  return subprocess.run(
      [sys.executable, '-m', 'pipeline.cli', 'run', '--config',
       demo.LOCAL_CONFIG, *args], capture_output=True, text=True, env=env,
      cwd=ROOT)


@pytest.fixture(scope='module')
def gs_run(gcs, tmp_path_factory, notop_weights):
  """One run from gs:// to gs://, and the same run on local files."""
  root = tmp_path_factory.mktemp('gs')
  ds = datasets.write_dataset(str(root / 'input'))
  _upload_tree(gcs.bucket, str(root / 'input'), 'input')
  gcs.bucket.blob(f'weights/{WEIGHTS_NAME}').upload_from_filename(
      notop_weights)
  flags = ['--max-error-fraction', '1', '--pooling', 'avg']
  refreshes_before = gcs.refreshes()
  result = _featurize_process(
      gcs, root, '--input', f'gs://{BUCKET}/input/**', '--output',
      f'gs://{BUCKET}/out', '--weights', f'gs://{BUCKET}/weights/{WEIGHTS_NAME}',
      *flags)
  assert result.returncode == 0, result.stderr[-4000:]
  local_out = str(root / 'local')
  assert featurize('--input', str(root / 'input' / '**'), '--output',
                   local_out, '--weights', notop_weights, *flags) == 0
  downloaded = str(root / 'downloaded')
  generations = _download_prefix(gcs.bucket, 'out', downloaded)
  return {'ds': ds, 'result': result, 'local': local_out, 'gs': downloaded,
          'generations': generations, 'root': root,
          'refreshes': gcs.refreshes() - refreshes_before,
          'secrets': gcs.secrets}


def test_same_keys_and_features_as_a_local_run(gs_run):
  assert f'gs://{BUCKET}/out' in gs_run['result'].stdout
  remote, local = read_outputs(gs_run['gs']), read_outputs(gs_run['local'])
  assert set(remote) == set(local) == set(gs_run['ds'].images)
  for key, (features, label) in local.items():
    np.testing.assert_allclose(remote[key][0], features, rtol=1e-4,
                               atol=1e-4 * max(1.0, np.abs(features).max()))
    assert remote[key][1] == label


def test_error_lines_for_bad_images(gs_run):
  errors = read_errors(gs_run['gs'])
  assert sorted(e['error_type'] for e in errors) == sorted(
      gs_run['ds'].errors.values())
  assert all(e['source'].startswith(f'gs://{BUCKET}/input/') for e in errors)


def test_manifest_then_success_written_last(gs_run):
  generations = gs_run['generations']  # GCS generations grow with time
  assert not [n for n in generations if n.startswith('.temp')]
  data = [g for n, g in generations.items()
          if n.startswith(('features-', 'errors-'))]
  assert data and max(data) < generations['manifest.json'] < generations[
      '_SUCCESS']
  with open(os.path.join(gs_run['gs'], 'manifest.json')) as f:
    manifest = json.load(f)
  assert manifest['status'] == 'succeeded'
  assert manifest['counts']['features'] == len(gs_run['ds'].images)
  assert sorted(s['path'] for s in manifest['feature_shards']) == sorted(
      n for n in generations if n.startswith('features-'))


def test_weights_copied_once_and_verified(gs_run, notop_weights):
  with open(os.path.join(gs_run['gs'], 'manifest.json')) as f:
    weights = json.load(f)['weights']
  assert weights['source'] == f'gs://{BUCKET}/weights/{WEIGHTS_NAME}'
  assert weights['size_bytes'] == os.path.getsize(notop_weights)
  folder = gs_run['root'] / 'featurize-weights' / weights['sha256']
  # One complete copy, no partial downloads left behind.
  assert sorted(p.name for p in folder.iterdir()) == ['.lock', WEIGHTS_NAME]


def test_credentials_used_but_never_written(gs_run):
  assert gs_run['refreshes'] >= 1  # the run really authenticated
  texts = [gs_run['result'].stdout, gs_run['result'].stderr]
  # The run's TMPDIR holds everything it wrote to local disk (weight cache,
  # Beam's temporary files) and the downloaded outputs and manifest.
  for folder, _, files in os.walk(gs_run['root']):
    for name in files:
      with open(os.path.join(folder, name), 'rb') as f:
        texts.append(f.read().decode('latin-1'))
  for secret in gs_run['secrets'].values():
    assert not [t for t in texts if secret in t]


@pytest.mark.parametrize('weights, message', [
    ('missing.h5', 'weight file not found'),
    ('not-hdf5.h5', 'not a Keras .h5 weight file'),
])
def test_bad_weights_object_fails_before_any_image_is_read(
    gcs, tmp_path, weights, message):
  gcs.bucket.blob('weights/not-hdf5.h5').upload_from_string(b'<html>denied')
  gcs.bucket.blob('few/one.jpg').upload_from_string(image_zoo.jpeg())
  out = f'bad-weights-{weights}'
  result = _featurize_process(
      gcs, tmp_path, '--input', f'gs://{BUCKET}/few/*.jpg', '--output',
      f'gs://{BUCKET}/{out}', '--weights', f'gs://{BUCKET}/weights/{weights}')
  assert result.returncode == 2  # usage: a bad weight file
  assert message in result.stderr and f'gs://{BUCKET}/weights/' in result.stderr
  assert not list(gcs.bucket.client.list_blobs(gcs.bucket, prefix=out))


def test_worker_processes_of_one_machine_download_the_weights_once(
    gcs_env, tmp_path, notop_weights, monkeypatch):
  """Concurrent loads wait for one copy (Dataflow runs a process per vCPU)."""
  import threading
  from apache_beam.io.filesystems import FileSystems
  from transforms.extract import models
  source = f'gs://{BUCKET}/weights-once/{WEIGHTS_NAME}'
  gcs_env.bucket.blob(f'weights-once/{WEIGHTS_NAME}').upload_from_filename(
      notop_weights)
  digest, size = models.inspect_weight_file(source)
  config = models.ModelConfig(weights=source, weights_sha256=digest,
                             weights_size=size,
                             weights_cache_dir=str(tmp_path / 'cache'))
  opened, real_open = [], FileSystems.open

  def counting_open(path, *args, **kwargs):
    if path == source:
      opened.append(path)
    return real_open(path, *args, **kwargs)

  monkeypatch.setattr(FileSystems, 'open', counting_open)
  paths = []
  threads = [threading.Thread(
      target=lambda: paths.append(models.local_weights_copy(config)))
             for _ in range(3)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert len(paths) == 3 and len(set(paths)) == 1
  assert len(opened) == 1
  assert models.sha256_of(paths[0]) == digest
  # A copy that no longer matches is replaced, not trusted.
  with open(paths[0], 'r+b') as f:
    f.write(b'\0' * 16)
  assert models.sha256_of(models.local_weights_copy(config)) == digest
  assert len(opened) == 2
