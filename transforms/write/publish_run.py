"""The last step of a run: check the counts, publish the shards, write the
manifest, then ``_SUCCESS``.

It runs once, after every bundle file has been written (its inputs are side
inputs), and only small bookkeeping records reach it. A runner may retry
it after it failed part way (after some renames, after the manifest): the
retry finishes the same publication. Each bundle file's final name follows
from the sorted list of files, the same on every attempt; a file whose
temporary copy is gone was renamed by an earlier attempt, and only files
that are not this run's are deleted as stale.
"""
import datetime
import json
import logging
from typing import Iterable, List, Optional, Set, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.coordination import fault_points, output_lock
from transforms.records import ShardRead, ShardWritten
from transforms.write.output_files import (ERRORS_KIND, FEATURES_KIND,
                                           MANIFEST_FILE, SUCCESS_FILE,
                                           OutputConfig, TooManyErrors,
                                           check_nothing_lost,
                                           error_share_problem,
                                           rename_into_place, shard_name)


def _targets(kind: str, written: List[ShardWritten],
             config: OutputConfig) -> List[Tuple[Optional[str], str, int]]:
  """(temporary path or None, final path, records) of each file of a kind.

  None stands for the one empty file of a kind that has no records, so
  that readers globbing the outputs find a file.
  """
  written = sorted(written, key=lambda w: w.temp_path)
  if not written:
    return [(None, config.path(shard_name(kind, 0, 1)), 0)]
  return [(w.temp_path, config.path(shard_name(kind, i, len(written))),
           w.records) for i, w in enumerate(written)]


def _existing(patterns: List[str]) -> Set[str]:
  matched = FileSystems.match(patterns)
  return {m.path for result in matched for m in result.metadata_list}


def _publish(targets: List[Tuple[Optional[str], str, int]],
             present: Set[str]) -> None:
  """Moves each temporary file to its final name, unless an earlier
  attempt did.

  Raises:
    RuntimeError: a file is neither at its temporary nor at its final
      path (a bug or outside interference, never bad input).
  """
  moves = []
  for temp, final, _ in targets:
    if temp is None:
      FileSystems.create(final).close()
    elif temp in present:
      moves.append((temp, final))
    elif final not in present:
      raise RuntimeError(f'{temp} is gone and {final} was never written')
  rename_into_place(moves)


def _entries(targets: List[Tuple[Optional[str], str, int]],
             config: OutputConfig) -> List[dict]:
  """The manifest's entries of published files: name and record count."""
  folder = config.path('')
  return [{'path': final[len(folder):], 'records': records}
          for _, final, records in targets]


def _remove_stale_outputs(config: OutputConfig, keep: Set[str]) -> Set[str]:
  """Deletes shards and manifest left by an earlier run that failed (and
  this run's manifest, if an earlier attempt wrote it: it is rewritten),
  all but the files in ``keep``; returns the files of ``keep`` that are
  there."""
  existing = _existing([config.path(p) for p in (
      'features-*', 'errors-*', MANIFEST_FILE)])
  stale = sorted(existing - keep)
  if stale:
    logging.info('Removing %d outputs of an earlier unfinished run', len(stale))
    FileSystems.delete(stale)
  return existing & keep


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
                error_files: List[ShardWritten],
                lock_holder: Optional[str] = None) -> dict:
  """Finishes a run whose bundle files are all written.

  Checks that every image read became one record or one error line,
  renames the bundle files to their shard names, writes the manifest, and
  then, unless too many images failed, ``_SUCCESS``; then releases the
  folder's lock for ``lock_holder``. Safe to run again after it failed
  part way.

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
  check_nothing_lost(images_in, n_features, n_errors)
  targets = {kind: _targets(kind, files, config) for kind, files in (
      (FEATURES_KIND, feature_files), (ERRORS_KIND, error_files))}
  finals = {final for files in targets.values() for _, final, _ in files}
  published = _remove_stale_outputs(config, keep=finals)
  present = _existing([FileSystems.join(temp_dir, '*')]) | published
  for files in targets.values():
    _publish(files, present)
  fault_points.pause('publish_renamed')
  problem = error_share_problem(images_in, n_errors, config)
  manifest = dict(describe)
  manifest.update({
      'status': 'too_many_errors' if problem else 'succeeded',
      'counts': {'images_in': images_in, 'features': n_features,
                 'errors': n_errors},
      'input_shards': [
          {'path': c.source, 'images': c.images}
          for c in sorted(read_counts, key=lambda c: c.source)],
      'feature_shards': _entries(targets[FEATURES_KIND], config),
      'error_shards': _entries(targets[ERRORS_KIND], config),
      'finished_at': datetime.datetime.now(
          datetime.timezone.utc).isoformat(timespec='seconds'),
  })
  _delete_temp_dir(temp_dir)
  _write_json(config.path(MANIFEST_FILE), manifest)
  if problem:
    if lock_holder:  # A failed run is over too: the next may start.
      output_lock.release(config.directory, lock_holder)
    raise TooManyErrors(problem)
  with FileSystems.create(config.path(SUCCESS_FILE)) as f:
    f.write(b'')
  if lock_holder:
    output_lock.release(config.directory, lock_holder)
  return manifest


class PublishRunFn(beam.DoFn):
  """Runs ``publish_run`` once, with the bookkeeping as side inputs."""

  def __init__(self, config: OutputConfig, temp_dir: str, describe: dict,
               lock_holder: Optional[str] = None):
    self._config = config
    self._temp_dir = temp_dir
    self._describe = describe
    self._lock_holder = lock_holder

  def process(self, unused_element, read_counts: List[ShardRead],
              feature_files: List[ShardWritten],
              error_files: List[ShardWritten]) -> Iterable[dict]:
    yield publish_run(self._config, self._temp_dir, self._describe,
                      read_counts, feature_files, error_files,
                      self._lock_holder)
