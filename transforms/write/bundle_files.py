"""Per-bundle output files: each bundle streams its records into one file.

Why not ``beam.io.WriteToTFRecord``: its fixed shard count groups every
feature record by key (a GroupByKey that the DirectRunner holds in memory),
and its runner-decided sharding reports file names only, so the manifest's
per-shard record counts would need a second read of every shard. This is
Beam's file-sink pattern in a few lines: each bundle writes one temporary
file and reports (file, count); ``publish`` renames the reported files at
the end. Files of failed or retried bundles are never reported, and are
deleted with the temporary folder.
"""
import json
import time
import uuid
from typing import Callable, Iterable, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from transforms import metrics
from transforms.coordination import fault_points, worker_progress
from transforms.read import tfrecord_framing
from transforms.records import ErrorRecord, FeatureRecord, ShardWritten
from transforms.write import example_codec
from transforms.write.output_files import ERRORS_KIND


def encode_feature_record(record: FeatureRecord) -> bytes:
  """One framed TFRecord record holding the record's Example."""
  return tfrecord_framing.encode_record(
      example_codec.encode_feature_example(record))


def encode_error_line(error: ErrorRecord) -> bytes:
  """One JSON line: key, source, stage, error_type, message."""
  return (json.dumps(error._asdict(), ensure_ascii=False) + '\n').encode()


class _WriteBundleFn(beam.DoFn):
  """Streams each bundle's records into temporary files: one per bundle,
  or, with ``per_source``, one per run of records of one input shard.

  Records of one shard arrive together (a shard is read by one call), so
  per-shard files keep one file open at a time; a shard met again later
  in the bundle gets a second file.
  """

  def __init__(self, kind: str, temp_dir: str,
               encode: Callable[[object], bytes], per_source: bool = False):
    self._kind = kind
    self._temp_dir = temp_dir
    self._encode = encode
    self._per_source = per_source
    self._written = metrics.counter(metrics.written(kind))
    self._write_micros = metrics.counter(metrics.write_micros(kind))

  def start_bundle(self):
    self._file = None
    self._path = None
    self._source = None
    self._count = 0

  def _close(self) -> Optional[ShardWritten]:
    """Closes the open file, if any; returns what it holds."""
    if self._file is None:
      return None
    self._file.close()
    self._file = None
    return ShardWritten(self._kind, self._path, self._count,
                        self._source if self._per_source else None)

  def process(self, element) -> Iterable:
    source = element.source if self._per_source else None
    if self._file is not None and source != self._source:
      yield self._close()
    if self._file is None:
      self._path = FileSystems.join(self._temp_dir,
                                    f'{self._kind}-{uuid.uuid4().hex}')
      self._file = FileSystems.create(self._path)
      self._source = source
      self._count = 0
    started = time.perf_counter()
    self._file.write(self._encode(element))
    self._write_micros.inc(int((time.perf_counter() - started) * 1e6))
    self._count += 1
    self._written.inc()
    # One image's outcome, whichever kind.
    worker_progress.add(worker_progress.IMAGES)
    if self._kind == ERRORS_KIND:
      worker_progress.add(worker_progress.ERRORS)
    fault_points.pause('writing')

  def finish_bundle(self):
    worker_progress.flush()
    written = self._close()
    if written is not None:
      yield GlobalWindows.windowed_value(written)

  def teardown(self):
    if getattr(self, '_file', None) is not None:
      self._file.close()


class WriteShards(beam.PTransform):
  """Writes records of one kind to temporary files, per bundle or, with
  ``per_source``, per input shard.

  Returns a PCollection of ``ShardWritten``, one per file.
  """

  def __init__(self, kind: str, temp_dir: str,
               encode: Callable[[object], bytes], per_source: bool = False):
    super().__init__()
    self._kind, self._temp_dir, self._encode = kind, temp_dir, encode
    self._per_source = per_source

  def expand(self, records):
    return records | 'WriteBundleFiles' >> beam.ParDo(
        _WriteBundleFn(self._kind, self._temp_dir, self._encode,
                       self._per_source))
