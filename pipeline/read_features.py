"""Reads featurize outputs without TensorFlow (for PyTorch users and such).

Uses the ``tfrecord`` package, which cannot share a process with
TensorFlow (both register ``tensorflow.BytesList`` in protobuf's pool), so
this module never imports TensorFlow, and nothing it imports does.

    from pipeline.read_features import iter_features
    for record in iter_features('out/'):          # a run's output folder
        record.key, record.features.shape, record.label
    iter_features('dataset/')                     # a dataset: its latest version
    iter_features('dataset/', version='v000003-20261129T001500Z')

Files are found through the manifest (a run's ``manifest.json``, a
dataset version's manifest), never by globbing folders.
"""
import json
import os
import sys
from typing import Iterator, List, NamedTuple, Optional, Union

import numpy as np

from pipeline.refresh import versions


class Features(NamedTuple):
  """One image's features as stored."""
  key: str
  features: np.ndarray
  label: Optional[Union[int, bytes]]


def feature_files(path: str, version: Optional[str] = None,
                  kind: str = 'features') -> List[str]:
  """The files of one kind of a finished run or of a dataset version.

  Args:
    path: A run's output folder (with ``_SUCCESS``), or a dataset root
      (with ``LATEST``).
    version: For a dataset, a version name; default the latest.
    kind: ``features`` or ``errors``.

  Raises:
    FileNotFoundError: ``path`` holds neither.
  """
  pointer = versions.read_pointer(path)
  if pointer is not None:
    manifest = versions.read_manifest(path, version or pointer.version)
    return [versions.path(path, p) for p in versions.files_of(manifest,
                                                              kind)]
  if version is not None:
    raise FileNotFoundError(f'{path} is not a versioned dataset')
  if not os.path.exists(os.path.join(path, '_SUCCESS')):
    raise FileNotFoundError(f'{path} holds no finished featurize run or '
                            'dataset version')
  with open(os.path.join(path, 'manifest.json')) as f:
    manifest = json.load(f)
  shards = {'features': 'feature_shards', 'errors': 'error_shards'}[kind]
  return [os.path.join(path, s['path']) for s in manifest[shards]]


def iter_features(path: str,
                  version: Optional[str] = None) -> Iterator[Features]:
  """Yields every feature record of a finished local run or of a local
  dataset's version (default: its latest), file by file.

  Raises:
    FileNotFoundError: ``path`` holds neither.
  """
  from tfrecord.reader import tfrecord_loader
  for file_path in feature_files(path, version):
    for example in tfrecord_loader(file_path, None):
      label = example.get('label')
      if isinstance(label, np.ndarray):
        label = int(label[0])
      yield Features(key=example['key'].decode('utf-8'),
                     features=example['features'].reshape(example['shape']),
                     label=label)


def main(argv=None) -> int:
  """``python -m pipeline.read_features DIR``: one line per record."""
  argv = sys.argv[1:] if argv is None else argv
  for record in iter_features(argv[0]):
    print(f'{record.key}\t{list(record.features.shape)}\t{record.label}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
