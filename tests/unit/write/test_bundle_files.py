"""Per-bundle output files: the bytes of one feature record and of one
error line, and the files a bundle writes, read back with the project's
own readers (``read_features``, ``inspection.summary.ErrorTally``)."""
import collections
import io
import json
import os
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that

from pipeline import job_metrics, read_features
from pipeline.inspection.summary import ErrorTally
from tests.support.paths import ROOT
from transforms.coordination import worker_progress
from transforms.read import tfrecord_framing
from transforms.records import ErrorRecord, FeatureRecord, ShardWritten
from transforms.write import bundle_files, example_codec
from transforms.write.output_files import ERRORS_KIND, FEATURES_KIND


def _feature(index: int, source: str = 'in/a.tar', label=None):
  values = np.arange(12, dtype=np.float32).reshape(2, 2, 3) + index
  return FeatureRecord(f'img{index}.jpg', values, label, source)


def _error(index: int, source: str = 'in/a.tar'):
  return ErrorRecord(f'bad{index}.jpg', source, 'decode', 'truncated',
                     f'image {index} ends early')


# The TF-free reader, in a process of its own: the ``tfrecord`` package's
# Example class cannot share a process with TensorFlow's, which other
# tests of the suite load.
_READ_BACK = """
import json, sys
import numpy as np
from pipeline import read_features
out = []
for r in read_features.iter_file(sys.argv[1]):
  label = r.label.decode('latin-1') if isinstance(r.label, bytes) else r.label
  features = ({k: [v.tolist(), list(v.shape)] for k, v in r.features.items()}
              if isinstance(r.features, dict) else
              [r.features.tolist(), list(r.features.shape)])
  out.append([r.key, label, isinstance(r.label, bytes), features])
print(json.dumps(out))
"""


def _read_back(path: str) -> list:
  """``read_features.iter_file(path)``'s records, as ``Features``."""
  result = subprocess.run([sys.executable, '-c', _READ_BACK, path],
                          cwd=ROOT, capture_output=True, text=True,
                          check=True)
  records = []
  for key, label, was_bytes, features in json.loads(result.stdout):
    if was_bytes:
      label = label.encode('latin-1')
    if isinstance(features, dict):
      features = {k: np.array(v, np.float32).reshape(s)
                  for k, (v, s) in features.items()}
    else:
      features = np.array(features[0], np.float32).reshape(features[1])
    records.append(read_features.Features(key, features, label))
  return records


def test_a_feature_record_is_one_framed_example(tmp_path):
  record = _feature(1, label=7)
  data = bundle_files.encode_feature_record(record)
  framed = list(tfrecord_framing.iter_records(io.BytesIO(data), 1 << 20))
  assert len(framed) == 1 and framed[0].error_type is None
  assert framed[0].data == example_codec.encode_feature_example(record)
  layers = FeatureRecord('ü/2.jpg', {
      'block4_pool': np.ones((1, 2, 2), np.float32),
      'block5_pool': np.full(3, -2.5, np.float32)}, b'{"x": 1}')
  path = tmp_path / 'features.tfrecord'
  path.write_bytes(data + bundle_files.encode_feature_record(layers))
  first, second = _read_back(str(path))
  assert (first.key, first.label) == ('img1.jpg', 7)
  np.testing.assert_array_equal(first.features, record.features)
  assert first.features.shape == (2, 2, 3)
  assert (second.key, second.label) == ('ü/2.jpg', b'{"x": 1}')
  assert sorted(second.features) == ['block4_pool', 'block5_pool']
  for layer, values in layers.features.items():
    np.testing.assert_array_equal(second.features[layer], values)


def test_an_error_line_is_one_json_object_of_its_fields():
  error = ErrorRecord('ü.jpg', 'in/a.tar', 'decode', 'truncated',
                      'line one\nline "two"')
  line = bundle_files.encode_error_line(error)
  assert line.endswith(b'\n') and line.count(b'\n') == 1
  assert 'ü'.encode() in line  # UTF-8, not \u escapes
  assert list(json.loads(line).items()) == [
      ('key', 'ü.jpg'), ('source', 'in/a.tar'), ('stage', 'decode'),
      ('error_type', 'truncated'), ('message', 'line one\nline "two"')]
  assert ErrorRecord(**json.loads(line)) == error


def _bundle(fn, elements) -> list:
  """Runs one bundle through the DoFn; returns the ``ShardWritten`` of
  each file, in the order they were closed."""
  fn.setup()
  fn.start_bundle()
  written: list = []
  for element in elements:
    written.extend(fn.process(element) or [])
  written.extend(value.value for value in fn.finish_bundle())
  fn.teardown()
  return written


def test_a_bundle_streams_into_one_file_and_counts_it(tmp_path, monkeypatch):
  monkeypatch.setenv(worker_progress.ENV, str(tmp_path / 'progress'))
  (tmp_path / 'progress').mkdir()
  temp = str(tmp_path / 'temp')
  os.makedirs(temp)
  records = [_feature(i, source=f'in/{i % 2}.tar') for i in range(5)]
  fn = bundle_files._WriteBundleFn(FEATURES_KIND, temp,
                                   bundle_files.encode_feature_record)
  written, = _bundle(fn, records)
  assert written.kind == FEATURES_KIND and written.records == 5
  assert written.source is None  # a bundle's file, not a shard's
  assert os.path.dirname(written.temp_path) == temp
  assert os.path.basename(written.temp_path).startswith('features-')
  assert os.listdir(temp) == [os.path.basename(written.temp_path)]
  back = _read_back(written.temp_path)
  assert [r.key for r in back] == [r.key for r in records]
  for read, record in zip(back, records):
    np.testing.assert_array_equal(read.features, record.features)
  # Each record is one image's outcome on the progress line.
  assert worker_progress.read_totals(str(tmp_path / 'progress')) == {
      worker_progress.IMAGES: 5}
  # The next bundle gets a file of its own; an empty one writes none.
  again, = _bundle(fn, records[:2])
  assert again.temp_path != written.temp_path and again.records == 2
  assert _bundle(fn, []) == []
  assert len(os.listdir(temp)) == 2


def test_error_lines_per_source_get_a_file_per_run_of_one_shard(
    tmp_path, monkeypatch):
  monkeypatch.setenv(worker_progress.ENV, str(tmp_path))
  temp = str(tmp_path / 'temp')
  os.makedirs(temp)
  sources = ['in/a', 'in/a', 'in/b', 'in/a']
  errors = [_error(i, source) for i, source in enumerate(sources)]
  fn = bundle_files._WriteBundleFn(ERRORS_KIND, temp,
                                   bundle_files.encode_error_line,
                                   per_source=True)
  written = _bundle(fn, errors)
  assert [(w.kind, w.source, w.records) for w in written] == [
      (ERRORS_KIND, 'in/a', 2), (ERRORS_KIND, 'in/b', 1),
      (ERRORS_KIND, 'in/a', 1)]
  assert len({w.temp_path for w in written}) == 3
  assert sorted(os.listdir(temp)) == sorted(
      os.path.basename(w.temp_path) for w in written)
  lines = []
  for w in written:
    with open(w.temp_path, 'rb') as f:
      lines.extend(f)
  assert [ErrorRecord(**json.loads(line)) for line in lines] == errors
  tally = ErrorTally()
  for line in lines:
    tally.add(line)
  assert (tally.lines, tally.unreadable) == (4, 0)
  assert [(g.stage, g.error_type, g.count) for g in tally.groups()] == [
      ('decode', 'truncated', 4)]
  totals = worker_progress.read_totals(str(tmp_path))
  assert totals == {worker_progress.IMAGES: 4, worker_progress.ERRORS: 4}


def _check_files(temp, records, per_source):
  """What the pipeline's files must hold: every record once, each file
  reported, and per source the shard's own records."""
  def check(written):
    assert all(isinstance(w, ShardWritten) and w.kind == FEATURES_KIND
               for w in written)
    assert sorted(os.listdir(temp)) == sorted(
        os.path.basename(w.temp_path) for w in written)
    keys = [r.key for w in written for r in _read_back(w.temp_path)]
    assert sorted(keys) == sorted(r.key for r in records)
    assert sum(w.records for w in written) == len(records)
    by_source = collections.Counter()
    for w in written:
      by_source[w.source] += w.records
    assert by_source == (collections.Counter(r.source for r in records)
                         if per_source else {None: len(records)})
  return check


@pytest.mark.parametrize('per_source', [False, True])
def test_write_shards_in_a_pipeline_reports_every_file(tmp_path, per_source):
  temp = str(tmp_path / 'temp')
  os.makedirs(temp)
  records = [_feature(i, source=f'in/{i // 3}.tar') for i in range(7)]
  with beam.Pipeline(runner=FnApiRunner()) as pipeline:
    written = (pipeline | beam.Create(records)
               | bundle_files.WriteShards(FEATURES_KIND, temp,
                                          bundle_files.encode_feature_record,
                                          per_source))
    assert_that(written, _check_files(temp, records, per_source))
  counted = job_metrics.from_result(pipeline.result)
  assert counted.features_written == 7 and counted.error_lines_written == 0
  # Its write time, where a write took a microsecond or more.
  assert set(counted.micros_per_image) <= {'features_write'}
