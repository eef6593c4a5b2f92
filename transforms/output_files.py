"""What a run leaves in its output folder: names, config and outcomes.

    DIR/features-SSSSS-of-NNNNN.tfrecord   feature records
    DIR/errors-SSSSS-of-NNNNN.jsonl        one line per image that failed
    DIR/manifest.json                      what was run and what came out
    DIR/_SUCCESS                           written last
"""
import dataclasses
from typing import Optional

from apache_beam.io.filesystems import FileSystems

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


def error_share_problem(images_in: int, errors: int,
                        config: OutputConfig) -> Optional[str]:
  """Why a run with these counts must fail, or None when it may succeed."""
  if images_in == 0:
    return 'the input shards hold no images at all'
  fraction = errors / images_in
  if fraction > config.max_error_fraction:
    return (f'{errors} of {images_in} images failed ({fraction:.1%}), more '
            f'than --max-error-fraction {config.max_error_fraction}; '
            f'see {config.path("errors-*.jsonl")}')
  return None


def shard_name(kind: str, index: int, total: int) -> str:
  """``features-00000-of-00003.tfrecord`` and the like."""
  return f'{kind}-{index:05d}-of-{total:05d}{SUFFIXES[kind]}'
