"""The final step alone, on local files: counts, shard names, manifest."""
import json
import os

import pytest

from transforms.records import ShardRead, ShardWritten
from transforms.write.output_files import OutputConfig, TooManyErrors
from transforms.write.publish_run import publish_run


def _temp_files(temp_dir, kind, counts):
  os.makedirs(temp_dir, exist_ok=True)
  written = []
  for index, count in enumerate(counts):
    path = os.path.join(temp_dir, f'{kind}-{index}')
    with open(path, 'wb') as f:
      f.write(f'{kind}{index}'.encode())
    written.append(ShardWritten(kind, path, count))
  return written


def test_shards_are_renamed_counted_and_success_written_last(tmp_path):
  out = tmp_path / 'out'
  temp = str(out / '.temp-x')
  features = _temp_files(temp, 'features', [3, 2])
  errors = _temp_files(temp, 'errors', [1])
  with open(os.path.join(temp, 'features-retried-bundle'), 'wb') as f:
    f.write(b'left by a failed attempt')
  manifest = publish_run(OutputConfig(str(out), 0.5), temp, {'model': 'x'},
                         [ShardRead('a', 4), ShardRead('b', 2)], features,
                         errors)
  assert manifest['model'] == 'x' and manifest['status'] == 'succeeded'
  assert manifest['counts'] == {'images_in': 6, 'features': 5, 'errors': 1}
  assert manifest['feature_shards'] == [
      {'path': 'features-00000-of-00002.tfrecord', 'records': 3},
      {'path': 'features-00001-of-00002.tfrecord', 'records': 2}]
  assert (out / 'features-00001-of-00002.tfrecord').read_bytes() == (
      b'features1')
  assert (out / 'errors-00000-of-00001.jsonl').read_bytes() == b'errors0'
  assert json.loads((out / 'manifest.json').read_text()) == manifest
  assert (out / '_SUCCESS').exists()
  assert not os.path.exists(temp)  # with the failed attempt's file


def test_lost_images_fail_the_run(tmp_path):
  temp = str(tmp_path / 'out' / '.temp')
  with pytest.raises(RuntimeError, match='lost'):
    publish_run(OutputConfig(str(tmp_path / 'out')), temp, {},
                [ShardRead('a', 3)], _temp_files(temp, 'features', [2]), [])
  assert not (tmp_path / 'out' / '_SUCCESS').exists()


def test_stale_shards_of_a_failed_run_are_replaced(tmp_path):
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'features-00002-of-00003.tfrecord').write_bytes(b'stale')
  temp = str(out / '.temp')
  publish_run(OutputConfig(str(out)), temp, {}, [ShardRead('a', 1)],
              _temp_files(temp, 'features', [1]), [])
  assert sorted(os.listdir(out)) == [
      '_SUCCESS', 'errors-00000-of-00001.jsonl',
      'features-00000-of-00001.tfrecord', 'manifest.json']


def test_too_many_errors_write_the_manifest_but_not_success(tmp_path):
  out = tmp_path / 'out'
  temp = str(out / '.temp')
  with pytest.raises(TooManyErrors, match='2 of 3 images failed'):
    publish_run(OutputConfig(str(out), 0.5), temp, {}, [ShardRead('a', 3)],
                _temp_files(temp, 'features', [1]),
                _temp_files(temp, 'errors', [2]))
  manifest = json.loads((out / 'manifest.json').read_text())
  assert manifest['status'] == 'too_many_errors'
  assert not (out / '_SUCCESS').exists()


def test_the_launcher_reads_too_many_errors_from_a_fresh_manifest(tmp_path):
  """Runners other than the DirectRunner report a failed last step as text;
  the launcher then finds the reason in the manifest that step wrote, and
  ignores one an earlier run left."""
  import datetime
  from pipeline import options, run
  out = tmp_path / 'out'
  job = options.parse_run_args(['--input', 'x', '--output', str(out),
                                '--max-error-fraction', '0.5']).job
  before = datetime.datetime.now(datetime.timezone.utc).replace(
      microsecond=0)
  temp = str(out / '.temp')
  with pytest.raises(TooManyErrors) as raised:
    publish_run(job.output, temp, {}, [ShardRead('a', 3)],
                _temp_files(temp, 'features', [1]),
                _temp_files(temp, 'errors', [2]))
  with pytest.raises(TooManyErrors) as read_back:
    run.raise_too_many_errors(job, before)
  assert str(read_back.value) == str(raised.value)
  later = before + datetime.timedelta(hours=1)
  run.raise_too_many_errors(job, later)  # an earlier run's: no verdict
  (out / 'manifest.json').unlink()
  run.raise_too_many_errors(job, before)  # no manifest: no verdict
