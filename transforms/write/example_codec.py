"""Serialises feature records as ``tf.train.Example`` protos, fast.

Why not ``tf.train.Example(...).SerializeToString()``: filling a FloatList
turns every value into a Python float (``extend(array.tolist())``), which
costs about as much as the model itself for large layers (block1_pool has
800k values an image). The Example wire format is small and stable, so we
write it directly: the feature array goes out as one packed copy of its
little-endian bytes. ``example_codec_test`` checks the bytes against
protobuf's own parser, and the end-to-end tests read them with ``tf.data``
and with the ``tfrecord`` package.
"""
from typing import Iterable, Optional

import numpy as np

from transforms.records import FeatureRecord

_UINT64_MASK = (1 << 64) - 1


# Most varints (field tags, short lengths) are one byte.
_ONE_BYTE = tuple(bytes((value,)) for value in range(0x80))


def _varint(value: int) -> bytes:
  if value < 0x80:
    return _ONE_BYTE[value]
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited field (wire type 2)."""
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(values: Iterable[bytes]) -> bytes:
  return _field(1, b''.join(_field(1, v) for v in values))  # bytes_list


def _float_feature(values: np.ndarray) -> bytes:
  packed = np.ascontiguousarray(values, dtype='<f4').tobytes()
  return _field(2, _field(1, packed))  # float_list, packed


def _int64_feature(values: Iterable[int]) -> bytes:
  packed = b''.join(_varint(int(v) & _UINT64_MASK) for v in values)
  return _field(3, _field(1, packed))  # int64_list, packed


def _map_entry(name: str, feature: bytes) -> bytes:
  return _field(1, _field(1, name.encode()) + _field(2, feature))


# Where a record of several layers keeps each: ``features/<layer>`` and
# ``shape/<layer>``; a single layer keeps the plain names, so that readers
# of single-layer output never change.
FEATURES_KEY = 'features'
SHAPE_KEY = 'shape'


def layer_keys(layer: str) -> tuple:
  """The feature names of one layer's values and shape in a record of
  several layers."""
  return f'{FEATURES_KEY}/{layer}', f'{SHAPE_KEY}/{layer}'


def encode_feature_example(record: FeatureRecord) -> bytes:
  """A ``tf.train.Example`` with ``key``, ``features`` (flattened float32),
  ``shape`` (int64) and, when the input had one, ``label`` (int64 or bytes).
  A record of several layers (``features`` a dict) holds
  ``features/<layer>`` and ``shape/<layer>`` for each instead.
  """
  entries = [_map_entry('key', _bytes_feature([record.key.encode('utf-8')]))]
  if isinstance(record.features, dict):
    for layer, values in record.features.items():
      values_key, shape_key = layer_keys(layer)
      entries.append(_map_entry(values_key,
                                _float_feature(values.reshape(-1))))
      entries.append(_map_entry(shape_key, _int64_feature(values.shape)))
  else:
    entries.append(_map_entry(
        FEATURES_KEY, _float_feature(record.features.reshape(-1))))
    entries.append(_map_entry(SHAPE_KEY,
                              _int64_feature(record.features.shape)))
  if isinstance(record.label, bytes):
    entries.append(_map_entry('label', _bytes_feature([record.label])))
  elif record.label is not None:
    entries.append(_map_entry('label', _int64_feature([record.label])))
  return _field(1, b''.join(entries))


def encode_image_example(key: str, data: bytes, label: Optional[int]) -> bytes:
  """A ``tf.train.Example`` of one encoded image as TFDS writes ImageNet
  (``image/encoded``, ``image/filename`` and, if given,
  ``image/class/label``): what ``pipeline.demo.image_example`` makes with
  protobuf's classes, here without TensorFlow (the GPU benchmark writes
  its datasets on machines that have none)."""
  entries = [
      _map_entry('image/encoded', _bytes_feature([data])),
      _map_entry('image/filename', _bytes_feature([key.encode('utf-8')])),
  ]
  if label is not None:
    entries.append(_map_entry('image/class/label', _int64_feature([label])))
  return _field(1, b''.join(entries))
