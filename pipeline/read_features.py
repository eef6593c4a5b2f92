"""Reads featurize outputs without TensorFlow (for PyTorch users and such).

Uses the ``tfrecord`` package, which cannot share a process with
TensorFlow (both register ``tensorflow.BytesList`` in protobuf's pool), so
this module never imports TensorFlow, and nothing it imports does.

    from pipeline.read_features import iter_features
    for record in iter_features('out/'):
        record.key, record.features.shape, record.label
"""
import glob
import os
import sys
from typing import Iterator, NamedTuple, Optional, Union

import numpy as np


class Features(NamedTuple):
  """One image's features as stored."""
  key: str
  features: np.ndarray
  label: Optional[Union[int, bytes]]


def iter_features(output_dir: str) -> Iterator[Features]:
  """Yields every feature record of a finished local run, shard by shard.

  Args:
    output_dir: A featurize output folder (with ``_SUCCESS``).

  Raises:
    FileNotFoundError: the folder holds no finished run.
  """
  from tfrecord.reader import tfrecord_loader
  if not os.path.exists(os.path.join(output_dir, '_SUCCESS')):
    raise FileNotFoundError(f'{output_dir} holds no finished featurize run')
  for path in sorted(glob.glob(os.path.join(output_dir,
                                            'features-*.tfrecord'))):
    for example in tfrecord_loader(path, None):
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
