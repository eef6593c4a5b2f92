"""``WriteOutputs``: features and error lines to sharded files, then the
manifest and ``_SUCCESS``, written last.

Why not ``beam.io.WriteToTFRecord``: its fixed shard count groups every
feature record by key (a GroupByKey that the DirectRunner holds in memory),
and its runner-decided sharding reports file names only, so the manifest's
per-shard record counts would need a second read of every shard. Our writer
is Beam's file-sink pattern in a few lines: each bundle streams its records
into one temporary file and reports (file, count); one final step renames
the files into ``features-SSSSS-of-NNNNN.tfrecord``. Files of failed or
retried bundles are never reported and are deleted with the temp folder.
"""
import dataclasses
import datetime
import json
import logging
import uuid
from typing import Callable, Iterable, List

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from transforms import example_codec, tfrecord_framing
from transforms.records import ErrorRecord, FeatureRecord, ShardRead, ShardWritten

SUCCESS_FILE = '_SUCCESS'
MANIFEST_FILE = 'manifest.json'
FEATURES_KIND = 'features'
ERRORS_KIND = 'errors'
SUFFIXES = {FEATURES_KIND: '.tfrecord', ERRORS_KIND: '.jsonl'}


class RunRefused(Exception):
  """The output directory already holds a finished run."""


class TooManyErrors(Exception):
  """More images failed than ``--max-error-fraction`` allows."""


@dataclasses.dataclass(frozen=True)
class OutputConfig:
  """Where and how results are written.

  Attributes:
    directory: Output folder (local, ``gs://`` or any Beam filesystem).
    max_error_fraction: Largest share of images that may fail before the
      run fails (no ``_SUCCESS``).
  """
  directory: str
  max_error_fraction: float = 0.05

  def __post_init__(self):
    if not 0.0 <= self.max_error_fraction <= 1.0:
      raise ValueError('max_error_fraction must be within [0, 1]')

  def path(self, name: str) -> str:
    return FileSystems.join(self.directory.rstrip('/'), name)


def encode_feature_record(record: FeatureRecord) -> bytes:
  """One framed TFRecord record holding the record's Example."""
  return tfrecord_framing.encode_record(
      example_codec.encode_feature_example(record))


def encode_error_line(error: ErrorRecord) -> bytes:
  """One JSON line: key, source, stage, error_type, message."""
  return (json.dumps(error._asdict(), ensure_ascii=False) + '\n').encode()


def shard_name(kind: str, index: int, total: int) -> str:
  """``features-00000-of-00003.tfrecord`` and the like."""
  return f'{kind}-{index:05d}-of-{total:05d}{SUFFIXES[kind]}'


class _WriteBundleFn(beam.DoFn):
  """Streams each bundle's records into one temporary file."""

  def __init__(self, kind: str, temp_dir: str,
               encode: Callable[[object], bytes]):
    self._kind = kind
    self._temp_dir = temp_dir
    self._encode = encode

  def start_bundle(self):
    self._file = None
    self._path = None
    self._count = 0

  def process(self, element) -> Iterable:
    if self._file is None:
      self._path = FileSystems.join(self._temp_dir,
                                    f'{self._kind}-{uuid.uuid4().hex}')
      self._file = FileSystems.create(self._path)
    self._file.write(self._encode(element))
    self._count += 1
    return ()

  def finish_bundle(self):
    if self._file is not None:
      self._file.close()
      yield GlobalWindows.windowed_value(
          ShardWritten(self._kind, self._path, self._count))
      self._file = None

  def teardown(self):
    if getattr(self, '_file', None) is not None:
      self._file.close()


class WriteShards(beam.PTransform):
  """Writes records of one kind to temporary per-bundle files.

  Returns a PCollection of ``ShardWritten``, one per file.
  """

  def __init__(self, kind: str, temp_dir: str,
               encode: Callable[[object], bytes]):
    super().__init__()
    self._kind, self._temp_dir, self._encode = kind, temp_dir, encode

  def expand(self, records):
    return records | 'WriteBundleFiles' >> beam.ParDo(
        _WriteBundleFn(self._kind, self._temp_dir, self._encode))


def _publish(kind: str, written: List[ShardWritten],
             config: OutputConfig) -> List[dict]:
  """Renames temp files to their final shard names; returns their entries."""
  written = sorted(written, key=lambda w: w.temp_path)
  if not written:
    # An empty shard, so that readers globbing the outputs find a file.
    name = shard_name(kind, 0, 1)
    FileSystems.create(config.path(name)).close()
    return [{'path': name, 'records': 0}]
  names = [shard_name(kind, i, len(written)) for i in range(len(written))]
  FileSystems.rename([w.temp_path for w in written],
                     [config.path(name) for name in names])
  return [{'path': name, 'records': w.records}
          for name, w in zip(names, written)]


def _remove_stale_outputs(config: OutputConfig) -> None:
  """Deletes shards and manifest left by an earlier run that failed."""
  stale = []
  for pattern in ('features-*', 'errors-*', MANIFEST_FILE):
    match = FileSystems.match([config.path(pattern)])[0]
    stale.extend(m.path for m in match.metadata_list)
  if stale:
    logging.info('Removing %d outputs of an earlier unfinished run', len(stale))
    FileSystems.delete(stale)


def _delete_temp_dir(temp_dir: str) -> None:
  """Deletes what failed or retried bundles left behind, then the folder."""
  leftovers = FileSystems.match([FileSystems.join(temp_dir, '*')])[0]
  if leftovers.metadata_list:
    FileSystems.delete([m.path for m in leftovers.metadata_list])
  if FileSystems.exists(temp_dir):  # Object stores have no folders.
    FileSystems.delete([temp_dir])


def _write_json(path: str, value: dict) -> None:
  """Writes JSON to a temporary file, then renames it into place."""
  temp = path + '.tmp'
  with FileSystems.create(temp) as f:
    f.write(json.dumps(value, indent=2, sort_keys=True).encode() + b'\n')
  FileSystems.rename([temp], [path])


class _FinalizeFn(beam.DoFn):
  """Checks the counts, publishes shards, writes the manifest, _SUCCESS."""

  def __init__(self, config: OutputConfig, temp_dir: str, describe: dict):
    self._config = config
    self._temp_dir = temp_dir
    self._describe = describe

  def process(self, unused_element, read_counts: List[ShardRead],
              feature_files: List[ShardWritten],
              error_files: List[ShardWritten]) -> Iterable[dict]:
    images_in = sum(c.images for c in read_counts)
    n_features = sum(w.records for w in feature_files)
    n_errors = sum(w.records for w in error_files)
    if images_in != n_features + n_errors:
      raise RuntimeError(
          f'{images_in} images read but {n_features} feature records + '
          f'{n_errors} error lines written: images were lost')
    _remove_stale_outputs(self._config)
    manifest = dict(self._describe)
    manifest.update({
        'counts': {'images_in': images_in, 'features': n_features,
                   'errors': n_errors},
        'input_shards': sorted(
            ({'path': c.source, 'images': c.images} for c in read_counts),
            key=lambda s: s['path']),
        'feature_shards': _publish(FEATURES_KIND, feature_files, self._config),
        'error_shards': _publish(ERRORS_KIND, error_files, self._config),
        'finished_at': datetime.datetime.now(
            datetime.timezone.utc).isoformat(timespec='seconds'),
    })
    _delete_temp_dir(self._temp_dir)
    fraction = n_errors / images_in if images_in else 1.0
    too_many = fraction > self._config.max_error_fraction
    manifest['status'] = 'too_many_errors' if too_many else 'succeeded'
    _write_json(self._config.path(MANIFEST_FILE), manifest)
    if images_in == 0:
      raise TooManyErrors('the input shards hold no images at all')
    if too_many:
      raise TooManyErrors(
          f'{n_errors} of {images_in} images failed ({fraction:.1%}), more '
          f'than --max-error-fraction {self._config.max_error_fraction}; '
          f'see {self._config.path("errors-*.jsonl")}')
    with FileSystems.create(self._config.path(SUCCESS_FILE)) as f:
      f.write(b'')
    yield manifest


class WriteOutputs(beam.PTransform):
  """Writes features, error lines, then the manifest and ``_SUCCESS``.

  Args:
    config: Output folder and error threshold.
    describe: What produced the features (model, preprocessing, versions),
      copied into the manifest.

  Input: a dict with ``features`` (``FeatureRecord``), ``errors``
  (``ErrorRecord``) and ``counts`` (``ShardRead``) PCollections.
  Returns the PCollection holding the manifest (one element).
  """

  def __init__(self, config: OutputConfig, describe: dict):
    super().__init__()
    self.config = config
    self.describe = describe
    # A fresh folder per run; creating it waits for run time.
    self.temp_dir = config.path(f'.temp-featurize-{uuid.uuid4().hex[:12]}')

  def expand(self, outputs):
    pipeline = outputs['features'].pipeline
    feature_files = outputs['features'] | 'WriteFeatures' >> WriteShards(
        FEATURES_KIND, self.temp_dir, encode_feature_record)
    error_files = outputs['errors'] | 'WriteErrors' >> WriteShards(
        ERRORS_KIND, self.temp_dir, encode_error_line)
    return (
        pipeline
        | 'Once' >> beam.Create([None])
        | 'Finalize' >> beam.ParDo(
            _FinalizeFn(self.config, self.temp_dir, self.describe),
            beam.pvalue.AsList(outputs['counts']),
            beam.pvalue.AsList(feature_files),
            beam.pvalue.AsList(error_files)))
