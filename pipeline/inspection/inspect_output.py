"""``featurize inspect OUT``: what a run's output or a dataset holds.

Reads what the output says about itself (the manifest, the error files it
lists) and, with ``--plot``, a bounded sample of the features; the
summary itself is made by the pure functions of ``summary``.
Never imports TensorFlow: the feature files are read with the
``tfrecord`` package (see ``read_features``). Paths may be local or on any
filesystem Beam reads (``gs://``).
"""
import argparse
import glob
import json
import struct
import sys
from typing import Iterator, NamedTuple, Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems

from pipeline import console
from pipeline.inspection import summary as summary_lib
from pipeline.inspection.summary import (ErrorTally, FileCount, Leftovers,
                                         Summary)
from pipeline.refresh import versions
from transforms.coordination import output_lock
from transforms.read import tfrecord_framing
from transforms.write.output_files import (MANIFEST_FILE, SUCCESS_FILE,
                                           TEMP_PREFIX)

DEFAULT_SAMPLE = 2000
# TFRecord framing: length and its checksum; the data's checksum.
_HEADER_BYTES = 12
_FOOTER_BYTES = 4


class NotAnOutput(Exception):
  """The path holds no featurize output."""


class Inspected(NamedTuple):
  """An output's summary, and where its feature files are.

  Attributes:
    summary: What the report says.
    feature_files: Full paths of its published feature files, with their
      record counts (for the plot's sample).
  """
  summary: Summary
  feature_files: Tuple[FileCount, ...]


def register(commands) -> None:
  """Adds ``inspect`` to the console script's commands."""
  parser = commands.add_parser(
      'inspect', help='What a run\'s output (finished, failed or killed) or '
      'a dataset version holds: counts, errors by stage and type, model, '
      'files; --plot draws the features and the errors.')
  parser.add_argument('path', metavar='OUT',
                      help='A run\'s output folder or a dataset root.')
  parser.add_argument('--version', help='For a dataset, a version name '
                      '(default: the latest; see featurize history).')
  parser.add_argument('--plot', metavar='FILE.png',
                      help='Also draw a PNG: a 2-D PCA of a sample of the '
                      'features, coloured by label, beside the errors by '
                      'type (needs pip install \'featurize[plot]\').')
  parser.add_argument('--sample', type=int, default=DEFAULT_SAMPLE,
                      metavar='N', help='Features in the plot at most '
                      f'(default {DEFAULT_SAMPLE}): the first ones of each '
                      'feature file, spread evenly over the files.')
  parser.set_defaults(handler=main)


def _join(root: str, name: str) -> str:
  return versions.path(root, name)


def _read_json(path: str) -> dict:
  with FileSystems.open(path) as f:
    return json.load(f)


def _lines(path: str) -> Iterator[bytes]:
  """The lines of a file, streamed (local or remote)."""
  with FileSystems.open(path) as f:
    yield from f


def tally_errors(paths: Sequence[str]) -> ErrorTally:
  """Reads error files line by line into a tally (a file that is missing
  counts as none: the tally's count then disagrees with the manifest's,
  which the report says)."""
  tally = ErrorTally()
  for path in paths:
    if not FileSystems.exists(path):
      continue
    for line in _lines(path):
      tally.add(line)
  return tally


def count_complete_records(path: str) -> int:
  """How many whole TFRecord records a file holds, though a killed writer
  may have cut it short: hops from length header to length header, never
  reading record data."""
  size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
  count = position = 0
  with FileSystems.open(path) as f:
    while True:
      f.seek(position)
      header = f.read(_HEADER_BYTES)
      if not tfrecord_framing.looks_like_tfrecord(header):
        return count
      length, = struct.unpack('<Q', header[:8])
      position += _HEADER_BYTES + length + _FOOTER_BYTES
      if position > size:
        return count
      count += 1


def find_leftovers(path: str, named_shards: bool = False) -> Leftovers:
  """What runs that did not finish left in ``.temp-featurize-*`` folders.

  Args:
    path: A run's output folder.
    named_shards: Count the shard files under their final names too: in
      a folder without a manifest, a publish step killed part way renamed
      them.
  """
  pattern = _join(path, TEMP_PREFIX + '*')
  patterns = [_join(pattern, '*')]
  if named_shards:
    patterns += [_join(path, 'features-*'), _join(path, 'errors-*')]
  files = sorted(m.path for match in FileSystems.match(patterns)
                 for m in match.metadata_list)
  folders = {f.rsplit('/', 1)[0] for f in files
             if f.rsplit('/', 2)[-2].startswith(TEMP_PREFIX)}
  if '://' not in path:  # Beam matches files only; local folders may be empty.
    folders |= set(glob.glob(pattern))
  feature_files, error_files = [], []
  for file_path in files:
    name = file_path.rsplit('/', 1)[-1]
    if name.startswith('features-'):
      # Remote files are not scanned: each hop would be a request.
      records = (count_complete_records(file_path)
                 if '://' not in file_path else -1)
      feature_files.append(FileCount(file_path, records))
    elif name.startswith('errors-'):
      error_files.append(file_path)
  return Leftovers(len(folders), tuple(feature_files), tuple(error_files))


def lock_note(path: str) -> Optional[str]:
  """Who holds the output's lock, if anyone, in a sentence."""
  holder, _ = output_lock.read(output_lock.lock_path(path))
  if holder is None:
    return None
  state = (' (its process is gone: killed)'
           if output_lock.holder_is_gone(holder) else '')
  return f'locked by {output_lock.describe_holder(holder)}{state}'


def _inspect_run(path: str) -> Inspected:
  manifest = _read_json(_join(path, MANIFEST_FILE))
  tally = tally_errors([_join(path, s['path'])
                        for s in manifest.get('error_shards') or ()])
  summary = summary_lib.summarise_run(
      path, manifest, FileSystems.exists(_join(path, SUCCESS_FILE)), tally,
      find_leftovers(path), lock_note(path))
  return Inspected(summary, tuple(FileCount(_join(path, f.path), f.records)
                                  for f in summary.feature_files))


def _inspect_version(root: str, pointer: versions.Pointer,
                     version: Optional[str]) -> Inspected:
  name = version or pointer.version
  try:
    manifest = versions.read_manifest(root, name)
  except FileNotFoundError:
    raise NotAnOutput(f'{root} has no version {name} (see featurize '
                      'history)') from None
  tally = tally_errors([versions.path(root, p)
                        for p in versions.files_of(manifest, 'errors')])
  summary = summary_lib.summarise_version(root, manifest, pointer.version,
                                          tally, lock_note(root))
  return Inspected(summary, tuple(
      FileCount(versions.path(root, f.path), f.records)
      for f in summary.feature_files))


def _unpublished_dataset(root: str) -> Optional[Summary]:
  """A dataset root whose first refresh has not published (yet)."""
  staged = FileSystems.match([versions.path(root, versions.STAGING, '**')])
  manifests = versions.list_versions(root)
  if not staged[0].metadata_list and not manifests:
    return None
  return summary_lib.summarise_unpublished(root, lock_note(root))


def inspect(path: str, version: Optional[str] = None) -> Inspected:
  """Reads what ``path`` holds into a summary.

  Raises:
    NotAnOutput: ``path`` holds no featurize output (or no such version).
  """
  pointer = versions.read_pointer(path)
  if pointer is not None:
    return _inspect_version(path, pointer, version)
  if version is not None:
    raise NotAnOutput(f'{path} is not a versioned dataset (no '
                      f'{versions.POINTER}), so it has no version {version}')
  if FileSystems.exists(_join(path, MANIFEST_FILE)):
    return _inspect_run(path)
  leftovers = find_leftovers(path, named_shards=True)
  note = lock_note(path)
  if leftovers.folders or leftovers.feature_files or note:
    tally = tally_errors(leftovers.error_files)
    # Only complete records are sampled: a file a kill cut short is
    # read no further than its last whole record.
    return Inspected(summary_lib.summarise_leftovers(path, leftovers, tally,
                                                     note),
                     tuple(f for f in leftovers.feature_files
                           if f.records > 0))
  unpublished = _unpublished_dataset(path)
  if unpublished:
    return Inspected(unpublished, ())
  if FileSystems.exists(_join(path, SUCCESS_FILE)):
    raise NotAnOutput(f'{path} has {SUCCESS_FILE} but no {MANIFEST_FILE}')
  raise NotAnOutput(f'{path} holds no featurize output (no {MANIFEST_FILE}, '
                    f'{versions.POINTER} or {TEMP_PREFIX}* folder)')


def _plot(inspected: Inspected, plot_path: str, sample_size: int) -> str:
  from pipeline.inspection import plot as inspect_plot
  model = inspected.summary.model
  sample = inspect_plot.sample_features(
      inspected.feature_files, sample_size,
      deepest=model.layer.split(',')[-1] if model else '')
  inspect_plot.draw(plot_path, inspected.summary, sample)
  return (f'featurize: plot in {plot_path} (PCA of '
          f'{summary_lib.count_of(len(sample.keys), "feature")}: the first '
          f'records of {summary_lib.count_of(sample.files_read, "file")})')


def main(argv: Optional[Sequence[str]],
         parser: argparse.ArgumentParser) -> int:
  """Runs ``featurize inspect``; returns the exit status."""
  args = parser.parse_args(argv)
  if args.sample < 1:
    parser.error('--sample must be at least 1')
  if args.plot:
    try:
      import matplotlib  # noqa: F401 (is it installed?)
    except ImportError:
      print('featurize: error: --plot needs matplotlib: pip install '
            '\'featurize[plot]\'', file=sys.stderr)
      return console.EXIT_USAGE
  try:
    inspected = inspect(args.path, args.version)
  except (NotAnOutput, FileNotFoundError) as e:
    print(f'featurize: error: {e}', file=sys.stderr)
    return console.EXIT_USAGE
  print(summary_lib.format_report(inspected.summary))
  if args.plot:
    print(_plot(inspected, args.plot, args.sample))
  return console.EXIT_OK
