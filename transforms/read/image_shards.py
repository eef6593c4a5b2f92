"""``ReadImageShards``: file pattern in, one result per image out.

Shards are matched, spread across workers (a ``Reshuffle`` of the file
names only), and each is streamed by one of the pure readers of
``shard_readers``. Every image comes out as an ``ImageRecord`` on the main
output or an ``ErrorRecord`` on ``errors``; each shard also reports its
image count on ``counts``, so that the final step can prove nothing was lost.
"""
import dataclasses
import logging
import re
import time
from typing import Iterator, Optional

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import metrics
from transforms.coordination import fault_points, worker_progress
from transforms.read import shard_readers
from transforms.records import ErrorRecord, ShardRead

INPUT_FORMATS = ('auto',) + shard_readers.SHARD_FORMATS



@dataclasses.dataclass(frozen=True)
class ReadConfig:
  """Where the images are and how they are stored.

  Attributes:
    pattern: File pattern (local, ``gs://`` or any Beam filesystem).
    format: ``auto`` (per shard, from its first bytes), ``tfrecord``,
      ``webdataset`` or ``files``.
    image_feature: TFRecord feature holding the encoded image.
    key_feature: TFRecord feature naming the image.
    label_feature: TFRecord feature passed through as the label.
    max_image_bytes: Largest encoded image (or record, or tar member).
    shard_list: A text file naming the shards to read, one path a line,
      instead of every file ``pattern`` matches (a refresh reads only its
      new and changed shards; ``pattern`` still gives plain files' keys).
  """
  pattern: str
  format: str = 'auto'
  image_feature: str = 'image/encoded'
  key_feature: str = 'image/filename'
  label_feature: str = 'image/class/label'
  max_image_bytes: int = 256 * 1024 * 1024
  shard_list: Optional[str] = None

  def __post_init__(self):
    if self.format not in INPUT_FORMATS:
      raise ValueError(f'format must be one of {INPUT_FORMATS}, '
                       f'not {self.format!r}')


def pattern_base(pattern: str) -> str:
  """The directory part of ``pattern`` before its first wildcard.

  Keys of plain image files are their paths relative to it, so that
  ``photos/**/*.jpg`` gives keys like ``cats/1.jpg``.
  """
  wildcard = re.search(r'[*?\[]', pattern)
  prefix = pattern[:wildcard.start()] if wildcard else pattern
  return prefix[:prefix.rfind('/') + 1]


def file_key(path: str, pattern: str) -> str:
  """Key of a plain image file: its path relative to the pattern base."""
  base = pattern_base(pattern)
  if base and path.startswith(base) and len(path) > len(base):
    return path[len(base):]
  return path.rsplit('/', 1)[-1]


def iter_shard(path: str, config: ReadConfig):
  """Opens one shard and yields its images (pure apart from the open)."""
  shard_format = config.format
  if shard_format == 'auto':
    with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as f:
      shard_format = shard_readers.sniff_shard_format(f.read(512))
  with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as f:
    if shard_format == 'tfrecord':
      yield from shard_readers.iter_tfrecord_images(
          f, path, image_feature=config.image_feature,
          key_feature=config.key_feature,
          label_feature=config.label_feature,
          max_record_bytes=config.max_image_bytes)
    elif shard_format == 'webdataset':
      yield from shard_readers.iter_webdataset_images(
          f, path, max_member_bytes=config.max_image_bytes)
    else:
      yield shard_readers.read_image_file(
          f, path, file_key(path, config.pattern),
          max_file_bytes=config.max_image_bytes)


class _ReadShardFn(beam.DoFn):
  """Streams one shard; routes images, errors and the shard's count."""

  def __init__(self, config: ReadConfig):
    self._config = config
    self._images = metrics.counter(metrics.IMAGES_READ)
    self._errors = metrics.counter(metrics.READ_ERRORS)
    self._read_micros = metrics.counter(metrics.READ_MICROS)

  def process(self, path: str) -> Iterator:
    fault_points.pause('reading')  # after the match, before any read
    count = 0
    results = iter_shard(path, self._config)
    try:
      while True:
        # Only the reader's own time: the loop's body runs the fused steps
        # downstream (decode, model, writer) before the next record.
        started = time.perf_counter()
        result = next(results, None)
        self._read_micros.inc(int((time.perf_counter() - started) * 1e6))
        if result is None:
          break
        count += 1
        if isinstance(result, ErrorRecord):
          self._errors.inc()
          yield beam.pvalue.TaggedOutput(metrics.ERRORS_TAG, result)
        else:
          self._images.inc()
          yield result
    except Exception as e:  # pylint: disable=broad-except
      # The shard could not be opened, or broke off mid-way in a way the
      # readers do not recognise (permissions, a vanished object, a corrupt
      # compressed stream). Its remaining images are unknown: one error line
      # says so, and the run goes on.
      logging.warning('Cannot read shard %s: %s', path, e)
      yield beam.pvalue.TaggedOutput(
          metrics.ERRORS_TAG,
          ErrorRecord.from_exception(f'{path}:{count}', path, 'read', e,
                                     kind='unreadable_shard'))
      count += 1
    worker_progress.add(worker_progress.SHARDS)
    yield beam.pvalue.TaggedOutput(metrics.COUNTS_TAG, ShardRead(path, count))


class ReadImageShards(beam.PTransform):
  """Reads every image of the shards matching ``config.pattern`` (or named
  in ``config.shard_list``).

  Returns a ``DoOutputsTuple`` with the main output ``images``
  (``ImageRecord``), ``errors`` (``ErrorRecord``) and ``counts``
  (``ShardRead``).
  """

  def __init__(self, config: ReadConfig):
    super().__init__()
    self.config = config

  def expand(self, pbegin):
    if self.config.shard_list:
      paths = pbegin | 'ListedShards' >> beam.io.ReadFromText(
          self.config.shard_list)
    else:
      paths = (
          pbegin
          | 'MatchShards' >> fileio.MatchFiles(
              self.config.pattern,
              empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
          | 'ShardPaths' >> beam.Map(lambda metadata: metadata.path))
    return (
        paths
        # Spreads shards over workers; only file names are shuffled.
        | 'SpreadShards' >> beam.Reshuffle()
        | 'StreamShards' >> beam.ParDo(_ReadShardFn(self.config)).with_outputs(
            metrics.ERRORS_TAG, metrics.COUNTS_TAG, main='images'))
