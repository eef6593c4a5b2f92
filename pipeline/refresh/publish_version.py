"""The last step of a refresh: a new version, then the pointer.

It runs once, after every per-shard file of the refresh is written (in the
pipeline's last step, or in the launcher when no shard needs reading), and
reads its plan from the refresh's staging folder:

1. check, shard by shard, that every image read became one feature record
   or one error line;
2. move each processed shard's files to ``files/<version>/<shard>/``;
3. write the version's manifest: the reused shards' entries as they were,
   the processed shards' new ones;
4. replace the pointer, conditioned on the version the refresh planned
   against; then delete the staging folder and release the lock.

A refresh killed before step 4 leaves the latest version as it was.
"""
import collections
import datetime
import hashlib
import os
import re
import shutil
from typing import Dict, Iterable, List

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.refresh import versions
from pipeline.refresh.plan import StagedPlan
from transforms.coordination import fault_points, output_lock as lock
from transforms.records import ShardRead, ShardWritten
from transforms.write.output_files import (ERRORS_KIND, FEATURES_KIND,
                                           OutputConfig, TooManyErrors,
                                           check_nothing_lost,
                                           error_share_problem,
                                           rename_into_place, shard_name)

PLAN_FILE = 'plan.json'
SHARD_LIST = 'shards.txt'
TEMP = 'tmp'


def _shard_name(source: str) -> str:
  """``<name>-<hash>`` of an input shard, for its folder of files."""
  name = re.sub(r'[^A-Za-z0-9._-]', '_', source.rstrip('/').rsplit('/', 1)[-1])
  digest = hashlib.sha1(source.encode()).hexdigest()[:10]
  return f'{name[:80]}-{digest}'


def shard_folder(version: str, source: str) -> str:
  """``files/<version>/<name>-<hash>``: one folder per processed shard."""
  return f'{versions.FILES}/{version}/{_shard_name(source)}'


def keep_failed_errors(root: str, version: str, refresh: str,
                       error_files: Dict[str, List[ShardWritten]]) -> str:
  """Moves a failed refresh's error lines where the user can read them:
  ``failed/<version>-<refresh>/<shard>/errors-*.jsonl``, after deleting
  an earlier failed refresh's. Returns that folder (under ``root``).

  The staging folder, where they were written, is cleared by the next
  refresh; these stay until another refresh fails with too many errors.
  Safe to run again after it failed part way (a runner retrying the
  step): files already moved are left where they are.
  """
  folder = versions.path(root, versions.FAILED, f'{version}-{refresh}')
  earlier = [m.path for m in FileSystems.match(
      [versions.path(root, versions.FAILED, '**')])[0].metadata_list
             if not m.path.startswith(folder + '/')]
  if earlier:
    FileSystems.delete(earlier)
  failed = versions.path(root, versions.FAILED)
  if '://' not in root and os.path.isdir(failed):  # local folders
    for name in os.listdir(failed):
      if os.path.join(failed, name) != folder:
        shutil.rmtree(os.path.join(failed, name), ignore_errors=True)
  moves = []
  for source, written in sorted(error_files.items()):
    written = sorted(written, key=lambda w: w.temp_path)
    for index, w in enumerate(written):
      final = versions.path(folder, _shard_name(source),
                            shard_name(ERRORS_KIND, index, len(written)))
      if FileSystems.exists(w.temp_path):
        moves.append((w.temp_path, final))
  rename_into_place(moves)
  return folder


def _move(root: str, folder: str, kind: str,
          written: List[ShardWritten]) -> List[dict]:
  """Moves a processed shard's files of one kind into ``folder``, named
  as a run names its shards, in the order of their temporary paths."""
  written = sorted(written, key=lambda w: w.temp_path)
  names = [f'{folder}/{shard_name(kind, i, len(written))}'
           for i in range(len(written))]
  rename_into_place([(w.temp_path, versions.path(root, name))
                     for name, w in zip(names, written)])
  return [{'path': name, 'records': w.records}
          for name, w in zip(names, written)]


def publish_version(root: str, staging: str, read_counts: List[ShardRead],
                    feature_files: List[ShardWritten],
                    error_files: List[ShardWritten]) -> dict:
  """Publishes the version a refresh planned; returns its manifest.

  Raises:
    RuntimeError: a shard's images were lost (a bug, never bad input).
    TooManyErrors: more of the images read failed than allowed; nothing
      is published, and the error lines are kept (``keep_failed_errors``),
      where the message says.
    versions.PointerMoved: another refresh published first.
  """
  with FileSystems.open(versions.path(staging, PLAN_FILE)) as f:
    plan = StagedPlan.from_json(f.read().decode())
  by_source = _files_by_source(feature_files, error_files)
  entries = _processed_shards(plan, read_counts, by_source)
  _check_error_share(root, plan, entries, by_source)
  for entry in entries:
    folder = shard_folder(plan.version, entry['path'])
    for kind in (FEATURES_KIND, ERRORS_KIND):
      entry['files'][kind] = _move(root, folder, kind,
                                   by_source[entry['path']][kind])
  manifest = _version_manifest(plan, entries)
  versions.write_manifest(root, manifest)
  fault_points.pause('before_pointer')
  versions.swap_pointer(root, plan.version, plan.parent_pointer)
  delete_tree(staging)
  if plan.keep:
    versions.prune(root, plan.keep)
  lock.release(root, plan.refresh)
  return manifest


_BySource = Dict[str, Dict[str, List[ShardWritten]]]


def _files_by_source(feature_files: Iterable[ShardWritten],
                     error_files: Iterable[ShardWritten]) -> _BySource:
  """Source shard -> kind -> the files written of it."""
  by_source: _BySource = collections.defaultdict(
      lambda: {FEATURES_KIND: [], ERRORS_KIND: []})
  for written in list(feature_files) + list(error_files):
    if written.source is None:  # a refresh's writer keeps shards apart
      raise RuntimeError(f'{written.temp_path}: no source shard')
    by_source[written.source][written.kind].append(written)
  return by_source


def _processed_shards(plan: StagedPlan, read_counts: List[ShardRead],
                      by_source: _BySource) -> List[dict]:
  """The manifest entries of the shards this refresh read (their files
  not yet moved), each checked: every image read is one feature record
  or one error line.

  Raises:
    RuntimeError: a shard planned was not read, one read was not
      planned, or images were lost (a bug, never bad input).
  """
  images = {c.source: c.images for c in read_counts}
  missing = set(plan.to_process) - set(images)
  if missing or set(by_source) - set(images):
    raise RuntimeError(f'shards planned but not read: {sorted(missing)}; '
                       'records of shards not planned: '
                       f'{sorted(set(by_source) - set(images))}')
  entries = []
  for source in sorted(plan.to_process):
    files = by_source[source]
    counts = {kind: sum(w.records for w in files[kind])
              for kind in (FEATURES_KIND, ERRORS_KIND)}
    check_nothing_lost(images[source], counts[FEATURES_KIND],
                       counts[ERRORS_KIND], where=f'{source}: ')
    entries.append({'path': source,
                    'fingerprint': plan.to_process[source],
                    'model_fingerprint': plan.model_fingerprint,
                    'version': plan.version, 'images': images[source],
                    'features': counts[FEATURES_KIND],
                    'errors': counts[ERRORS_KIND],
                    'files': {}})
  return entries


def _check_error_share(root: str, plan: StagedPlan, entries: List[dict],
                       by_source: _BySource) -> None:
  """Raises ``TooManyErrors`` where more of the images read failed than
  the plan allows, after keeping their error lines where the message
  says (``keep_failed_errors``)."""
  processed = sum(e['images'] for e in entries)
  failed = sum(e['errors'] for e in entries)
  config = OutputConfig(root, plan.max_error_fraction)
  if not processed or not error_share_problem(processed, failed, config):
    return
  kept = keep_failed_errors(
      root, plan.version, plan.refresh,
      {source: by_source[source][ERRORS_KIND] for source in plan.to_process})
  problem = error_share_problem(
      processed, failed, config,
      error_lines=f'{kept}/*/{ERRORS_KIND}-*.jsonl (kept until another '
      'refresh fails so)')
  raise TooManyErrors(f'refresh {plan.version}: {problem}')


def _version_manifest(plan: StagedPlan, entries: List[dict]) -> dict:
  """The new version's manifest: the reused shards' entries as they
  were, the processed shards' new ones, and the counts."""
  shards = sorted(plan.reused + entries, key=lambda e: e['path'])
  return {
      'version': plan.version,
      'parent': plan.parent,
      'created_at': datetime.datetime.now(
          datetime.timezone.utc).isoformat(timespec='seconds'),
      'model_fingerprint': plan.model_fingerprint,
      'input_pattern': plan.input_pattern,
      'describe': plan.describe,
      'counts': {
          'shards': len(shards),
          'images_in': sum(e['images'] for e in shards),
          'features': sum(e['features'] for e in shards),
          'errors': sum(e['errors'] for e in shards),
          'shards_processed': len(entries),
          'images_processed': sum(e['images'] for e in entries),
      },
      'shards': shards,
  }


def delete_tree(folder: str) -> None:
  """Deletes a staging folder and what failed bundles left in it."""
  leftovers = FileSystems.match([versions.path(folder, '**')])[0]
  paths = [m.path for m in leftovers.metadata_list]
  if paths:
    FileSystems.delete(paths)
  if FileSystems.exists(folder):  # Object stores have no folders.
    FileSystems.delete([folder])


class PublishVersionFn(beam.DoFn):
  """Runs ``publish_version`` once, with the bookkeeping as side inputs."""

  def __init__(self, root: str, staging: str):
    self._root = root
    self._staging = staging

  def process(self, unused_element, read_counts: List[ShardRead],
              feature_files: List[ShardWritten],
              error_files: List[ShardWritten]) -> Iterable[dict]:
    yield publish_version(self._root, self._staging, read_counts,
                          feature_files, error_files)
