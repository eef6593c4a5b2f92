"""The last step of a run: check the counts, publish the shards, write the
manifest, then ``_SUCCESS``.

It runs once, after every bundle file has been written (its inputs are side
inputs), and only small bookkeeping records reach it.
"""
import datetime
import json
import logging
from typing import Iterable, List

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.output_files import (ERRORS_KIND, FEATURES_KIND,
                                     MANIFEST_FILE, SUCCESS_FILE,
                                     OutputConfig, TooManyErrors,
                                     error_share_problem, shard_name)
from transforms.records import ShardRead, ShardWritten


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


def publish_run(config: OutputConfig, temp_dir: str, describe: dict,
                read_counts: List[ShardRead],
                feature_files: List[ShardWritten],
                error_files: List[ShardWritten]) -> dict:
  """Finishes a run whose bundle files are all written.

  Checks that every image read became one record or one error line,
  renames the bundle files to their shard names, writes the manifest, and
  then, unless too many images failed, ``_SUCCESS``.

  Returns:
    The manifest.

  Raises:
    RuntimeError: images were lost (a bug, never bad input).
    TooManyErrors: the error share is above the threshold, or there were
      no images at all; the manifest is written, ``_SUCCESS`` is not.
  """
  images_in = sum(c.images for c in read_counts)
  n_features = sum(w.records for w in feature_files)
  n_errors = sum(w.records for w in error_files)
  if images_in != n_features + n_errors:
    raise RuntimeError(
        f'{images_in} images read but {n_features} feature records + '
        f'{n_errors} error lines written: images were lost')
  _remove_stale_outputs(config)
  problem = error_share_problem(images_in, n_errors, config)
  manifest = dict(describe)
  manifest.update({
      'status': 'too_many_errors' if problem else 'succeeded',
      'counts': {'images_in': images_in, 'features': n_features,
                 'errors': n_errors},
      'input_shards': sorted(
          ({'path': c.source, 'images': c.images} for c in read_counts),
          key=lambda s: s['path']),
      'feature_shards': _publish(FEATURES_KIND, feature_files, config),
      'error_shards': _publish(ERRORS_KIND, error_files, config),
      'finished_at': datetime.datetime.now(
          datetime.timezone.utc).isoformat(timespec='seconds'),
  })
  _delete_temp_dir(temp_dir)
  _write_json(config.path(MANIFEST_FILE), manifest)
  if problem:
    raise TooManyErrors(problem)
  with FileSystems.create(config.path(SUCCESS_FILE)) as f:
    f.write(b'')
  return manifest


class PublishRunFn(beam.DoFn):
  """Runs ``publish_run`` once, with the bookkeeping as side inputs."""

  def __init__(self, config: OutputConfig, temp_dir: str, describe: dict):
    self._config = config
    self._temp_dir = temp_dir
    self._describe = describe

  def process(self, unused_element, read_counts: List[ShardRead],
              feature_files: List[ShardWritten],
              error_files: List[ShardWritten]) -> Iterable[dict]:
    yield publish_run(self._config, self._temp_dir, self._describe,
                      read_counts, feature_files, error_files)
