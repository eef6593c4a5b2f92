"""``featurize files ROOT`` and ``featurize history ROOT``: a dataset's
files for other tools, and its versions for people."""
import argparse
import functools
import sys
from typing import List, Optional, Sequence

from pipeline import read_features
from pipeline.refresh import versions

def register(commands) -> None:
  """Adds ``files`` and ``history`` to the console script's commands."""
  files = commands.add_parser(
      'files', help='List the files of a dataset version (default: the '
      'latest) or of a run\'s output, one path a line.')
  files.add_argument('root', help='Dataset root or run output folder.')
  files.add_argument('--version', help='A version name (see history).')
  files.add_argument('--kind', choices=('features', 'errors'),
                     default='features')
  history = commands.add_parser(
      'history', help='The versions of a dataset: dates, counts, model.')
  history.add_argument('root', help='Dataset root.')
  files.set_defaults(handler=functools.partial(main, 'files'))
  history.set_defaults(handler=functools.partial(main, 'history'))


def history_lines(root: str) -> List[str]:
  """One line per version, oldest first; the latest is marked."""
  pointer = versions.read_pointer(root)
  lines = []
  for name in versions.list_versions(root):
    manifest = versions.read_manifest(root, name)
    counts = manifest['counts']
    mark = '  <- LATEST' if pointer and pointer.version == name else ''
    described = manifest.get('describe') or {}
    model = f'{described.get("model", "?")} {described.get("layer", "?")}'
    lines.append(
        f'{name}  {manifest["created_at"]}  {model} (fingerprint '
        f'{manifest["model_fingerprint"]})  {counts["shards"]} shards, '
        f'{counts["images_in"]} images ({counts["images_processed"]} read), '
        f'{counts["features"]} features, {counts["errors"]} errors{mark}')
  return lines


def main(command: str, argv: Optional[Sequence[str]],
         parser: argparse.ArgumentParser) -> int:
  """Runs ``featurize files`` or ``history``; returns the exit status."""
  args = parser.parse_args(argv)
  try:
    if command == 'files':
      for path in read_features.feature_files(args.root, args.version,
                                              args.kind):
        print(path)
      return 0
    lines = history_lines(args.root)
  except FileNotFoundError as e:
    print(f'featurize: error: {e}', file=sys.stderr)
    return 1
  if not lines:
    print(f'featurize: error: {args.root} has no versions', file=sys.stderr)
    return 1
  print('\n'.join(lines))
  return 0
