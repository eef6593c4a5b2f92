"""The publish step retried after it failed part way, on local disk and on
the GCS server: the retry finishes with exactly the files one uninterrupted
publication leaves (a runner retries a failed step; so may a user).

Failures are injected at each point of the step: after some of the
renames, after all of them, after the manifest, before ``_SUCCESS``.
"""
import json
import uuid

import pytest
from apache_beam.io.filesystems import FileSystems

from tests.support.gcs_server import BUCKET
from transforms.coordination import output_lock
from transforms.records import ShardRead, ShardWritten
from transforms.write import publish_run
from transforms.write.output_files import OutputConfig

FEATURES = [3, 2, 4, 1]  # records per bundle file
ERRORS = [1, 1]
READ = [ShardRead('a', 7), ShardRead('b', 5)]


class Injected(Exception):
  """The failure a test injects."""


def _write(path, data: bytes):
  with FileSystems.create(path) as f:
    f.write(data)


def _temp_files(temp_dir, kind, counts):
  written = []
  for index, count in enumerate(counts):
    path = FileSystems.join(temp_dir, f'{kind}-bundle{index}')
    _write(path, f'{kind} bundle {index}'.encode())
    written.append(ShardWritten(kind, path, count))
  return written


def _files(root):
  """Every file under ``root``: relative path -> bytes."""
  matched = FileSystems.match([FileSystems.join(root, '**')])[0]
  found = {}
  for meta in matched.metadata_list:
    with FileSystems.open(meta.path) as f:
      found[meta.path[len(root) + 1:]] = f.read()
  return found


def _publish(root, **patched):
  """One publication into ``root``, as the pipeline's last step does it:
  an earlier failed run's shard lies there, and this run holds the lock."""
  config = OutputConfig(root, max_error_fraction=0.5)
  temp = FileSystems.join(root, '.temp-featurize-run')
  if not FileSystems.exists(FileSystems.join(root, 'features-00007-of-00009'
                                             '.tfrecord')):
    _write(FileSystems.join(root, 'features-00007-of-00009.tfrecord'),
           b'an earlier run\'s')
    output_lock.acquire(root, 'this-run', job='run')
  features = _temp_files(temp, 'features', FEATURES)
  errors = _temp_files(temp, 'errors', ERRORS)
  return lambda: publish_run.publish_run(config, temp, {'model': 'm'}, READ,
                                     features, errors, 'this-run')


def _fail_after_renames(monkeypatch, count):
  rename = FileSystems.rename

  def partial(sources, destinations):
    rename(sources[:count], destinations[:count])
    raise Injected(f'after {count} renames')
  monkeypatch.setattr(FileSystems, 'rename', staticmethod(partial))


def _fail_after(monkeypatch, name):
  original = getattr(publish_run, name)

  def then_fail(*args):
    original(*args)
    raise Injected(f'after {name}')
  monkeypatch.setattr(publish_run, name, then_fail)


def _fail_before_success(monkeypatch):
  create = FileSystems.create

  def refuse_success(path, *args, **kwargs):
    if path.endswith('_SUCCESS'):
      raise Injected('before _SUCCESS')
    return create(path, *args, **kwargs)
  monkeypatch.setattr(FileSystems, 'create', staticmethod(refuse_success))


POINTS = {
    'some_renames': lambda mp: _fail_after_renames(mp, 2),
    'all_renames': lambda mp: _fail_after(mp, '_delete_temp_dir'),
    'after_manifest': lambda mp: _fail_after(mp, '_write_json'),
    'before_success': _fail_before_success,
}


@pytest.fixture(params=['local', 'gcs'])
def folder(request, tmp_path):
  """A folder to publish into: local, or in the GCS server's bucket."""
  if request.param == 'local':
    return lambda name: str(tmp_path / name)
  request.getfixturevalue('gcs_env')
  run = uuid.uuid4().hex[:8]
  return lambda name: f'gs://{BUCKET}/publish-retry/{run}/{name}'


@pytest.mark.parametrize('point', sorted(POINTS))
def test_a_retried_publication_ends_as_an_uninterrupted_one(
    point, folder, monkeypatch):
  reference = folder('reference')
  expected = _publish(reference)()
  expected_files = _files(reference)

  root = folder('retried')
  attempt = _publish(root)
  with monkeypatch.context() as patch:
    POINTS[point](patch)
    with pytest.raises(Injected):
      attempt()
  assert not FileSystems.exists(FileSystems.join(root, '_SUCCESS'))
  manifest = attempt()  # the retry

  files = _files(root)
  assert sorted(files) == sorted(expected_files)
  for name, data in expected_files.items():
    if name != 'manifest.json':
      assert files[name] == data, name
  written = json.loads(files['manifest.json'])
  for found in (written, manifest):
    found.pop('finished_at')
  expected.pop('finished_at')
  assert written == manifest == expected
  # Published whole: 4 feature files in order, the stale shard gone, no
  # temporary file, _SUCCESS last, the lock released.
  assert [s['records'] for s in manifest['feature_shards']] == FEATURES
  assert sorted(files) == [
      '_SUCCESS', 'errors-00000-of-00002.jsonl',
      'errors-00001-of-00002.jsonl', 'features-00000-of-00004.tfrecord',
      'features-00001-of-00004.tfrecord', 'features-00002-of-00004.tfrecord',
      'features-00003-of-00004.tfrecord', 'manifest.json']


def test_a_file_neither_temporary_nor_published_fails_loudly(tmp_path):
  root = str(tmp_path / 'out')
  attempt = _publish(root)
  FileSystems.delete([FileSystems.join(root, '.temp-featurize-run',
                                       'features-bundle2')])
  with pytest.raises(RuntimeError, match='features-bundle2 is gone and .*'
                     'features-00002-of-00004.tfrecord was never written'):
    attempt()
  assert not FileSystems.exists(FileSystems.join(root, '_SUCCESS'))
