"""Reads featurize outputs without TensorFlow (for PyTorch users and such).

Uses the ``tfrecord`` package, which cannot share a process with
TensorFlow (both register ``tensorflow.BytesList`` in protobuf's pool), so
this module never imports TensorFlow, and nothing it imports does.

    from pipeline.read_features import iter_features
    for record in iter_features('out/'):          # a run's output folder
        record.key, record.features.shape, record.label
    # a run of several layers (--layer block3_pool,block4_pool): a dict
    record.features['block3_pool'].shape
    iter_features('dataset/')             # a dataset: its latest version
    iter_features('dataset/', version='v000003-20261129T001500Z')

Files are found through the manifest (a run's ``manifest.json``, a
dataset version's manifest), never by globbing folders. Paths may be local
or on any filesystem Beam reads (``gs://``).
"""
import json
import sys
from typing import Dict, Iterator, List, NamedTuple, Optional, Union

import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipeline.refresh import versions
from transforms.write import example_codec


class Features(NamedTuple):
  """One image's features as stored: an array, or for a run of several
  layers a dict of arrays by layer name."""
  key: str
  features: Union[np.ndarray, Dict[str, np.ndarray]]
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
  if not FileSystems.exists(versions.path(path, '_SUCCESS')):
    raise FileNotFoundError(f'{path} holds no finished featurize run or '
                            'dataset version')
  with FileSystems.open(versions.path(path, 'manifest.json')) as f:
    manifest = json.load(f)
  shards = {'features': 'feature_shards', 'errors': 'error_shards'}[kind]
  return [versions.path(path, s['path']) for s in manifest[shards]]


def _examples(file_path: str) -> Iterator[dict]:
  """The examples of one feature file, decoded by the ``tfrecord`` package.

  Its loader opens local paths only; elsewhere (``gs://``) the records are
  framed from a Beam file object by the shard reader's framing code.
  """
  from tfrecord import example_pb2
  from tfrecord.reader import extract_feature_dict, tfrecord_loader
  if '://' not in file_path:
    yield from tfrecord_loader(file_path, None)
    return
  from transforms.read.tfrecord_framing import iter_records
  typenames = {'byte': 'bytes_list', 'float': 'float_list',
               'int': 'int64_list'}
  with FileSystems.open(file_path) as stream:
    for record in iter_records(stream, max_record_bytes=1 << 31):
      if record.data is None:
        raise ValueError(f'{file_path}: {record.message}')
      example = example_pb2.Example.FromString(record.data)
      yield extract_feature_dict(example.features, None, typenames)


def iter_features(path: str,
                  version: Optional[str] = None) -> Iterator[Features]:
  """Yields every feature record of a finished run or of a dataset's
  version (default: its latest), file by file.

  Raises:
    FileNotFoundError: ``path`` holds neither.
  """
  for file_path in feature_files(path, version):
    yield from iter_file(file_path)


def iter_file(file_path: str) -> Iterator[Features]:
  """Yields the feature records of one feature file, in file order."""
  for example in _examples(file_path):
    label = example.get('label')
    if isinstance(label, np.ndarray):
      label = int(label[0])
    yield Features(key=example['key'].decode('utf-8'),
                   features=features_of(example), label=label)


def features_of(example: dict) -> Union[np.ndarray, Dict[str, np.ndarray]]:
  """A decoded example's features in their shapes: the array of a
  single-layer record, or each layer's of a record of several."""
  if example_codec.FEATURES_KEY in example:
    return example[example_codec.FEATURES_KEY].reshape(
        example[example_codec.SHAPE_KEY])
  prefix = example_codec.FEATURES_KEY + '/'
  out = {}
  for name in example:
    if name.startswith(prefix):
      layer = name[len(prefix):]
      values_key, shape_key = example_codec.layer_keys(layer)
      out[layer] = example[values_key].reshape(example[shape_key])
  return out


def describe_shape(features) -> str:
  """``[7, 7, 512]``, or ``block3_pool [28, 28, 256], ...`` for several."""
  if isinstance(features, dict):
    return ', '.join(f'{layer} {list(values.shape)}'
                     for layer, values in features.items())
  return str(list(features.shape))


def main(argv=None) -> int:
  """``python -m pipeline.read_features DIR``: one line per record."""
  argv = sys.argv[1:] if argv is None else argv
  for record in iter_features(argv[0]):
    # !r: a bytes label prints as b'...', as it always has.
    print(f'{record.key}\t{describe_shape(record.features)}\t'
          f'{record.label!r}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
