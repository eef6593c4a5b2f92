"""What a run leaves in its output folder: names, config and outcomes.

    DIR/features-SSSSS-of-NNNNN.tfrecord   feature records
    DIR/errors-SSSSS-of-NNNNN.jsonl        one line per image that failed
    DIR/manifest.json                      what was run and what came out
    DIR/_SUCCESS                           written last

and, while a run works, ``DIR/.lock`` (``output_lock``) and its temporary
folder ``DIR/.temp-featurize-<id>/``.
"""
import dataclasses
import glob
import logging
import os
import shutil
from typing import Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems

SUCCESS_FILE = '_SUCCESS'
MANIFEST_FILE = 'manifest.json'
FEATURES_KIND = 'features'
ERRORS_KIND = 'errors'
SUFFIXES = {FEATURES_KIND: '.tfrecord', ERRORS_KIND: '.jsonl'}
TEMP_PREFIX = '.temp-featurize-'


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


def check_nothing_lost(images: int, features: int, errors: int,
                       where: str = '') -> None:
  """The rule both publish steps check first (``publish_run``, and a
  refresh's ``publish_version`` shard by shard).

  Raises:
    RuntimeError: the images read did not each become one feature record
      or one error line (a bug, never bad input).
  """
  if images != features + errors:
    raise RuntimeError(
        f'{where}{images} images read but {features} feature records + '
        f'{errors} error lines written: images were lost')


def rename_into_place(moves: Sequence[Tuple[str, str]]) -> None:
  """Renames each ``(temporary, final)`` file in one call of Beam's
  filesystems, making the final folders first on local disk (object
  stores have none); both publish steps finish with it."""
  if not moves:
    return
  for _, final in moves:
    if '://' not in final:
      os.makedirs(os.path.dirname(final) or '.', exist_ok=True)
  FileSystems.rename([temp for temp, _ in moves],
                     [final for _, final in moves])


def error_share_problem(images_in: int, errors: int, config: OutputConfig,
                        error_lines: Optional[str] = None) -> Optional[str]:
  """Why a run with these counts must fail, or None when it may succeed.

  Args:
    images_in: Images read.
    errors: Error lines among them.
    config: The output, with its ``max_error_fraction``.
    error_lines: Where the error lines are, for the message (default: a
      run's, ``DIR/errors-*.jsonl``, which the publish step has renamed
      into place by the time it checks).
  """
  if images_in == 0:
    return 'the input shards hold no images at all'
  fraction = errors / images_in
  if fraction > config.max_error_fraction:
    where = error_lines or config.path(
        f'{ERRORS_KIND}-*{SUFFIXES[ERRORS_KIND]}')
    return (f'{errors} of {images_in} images failed ({fraction:.1%}), more '
            f'than --max-error-fraction {config.max_error_fraction}; '
            f'see {where}')
  return None


def shard_name(kind: str, index: int, total: int) -> str:
  """``features-00000-of-00003.tfrecord`` and the like."""
  return f'{kind}-{index:05d}-of-{total:05d}{SUFFIXES[kind]}'


def remove_leftovers(config: OutputConfig) -> int:
  """Deletes what unfinished runs left in the output folder: their
  temporary folders and half-written JSON files. Returns how many files.

  Only safe while holding the folder's lock: no other run is writing.
  """
  matched = FileSystems.match([config.path(TEMP_PREFIX + '**'),
                               config.path('*.tmp')])
  files = [m.path for result in matched for m in result.metadata_list]
  if files:
    logging.info('Removing %d files of unfinished runs', len(files))
    FileSystems.delete(files)
  if '://' not in config.directory:  # Local folders outlive their files.
    for folder in glob.glob(os.path.join(config.directory,
                                         TEMP_PREFIX + '*')):
      shutil.rmtree(folder, ignore_errors=True)
  return len(files)
