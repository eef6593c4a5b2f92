"""The hand-written Example encoder against protobuf's own parser."""
import numpy as np
import pytest
from tensorflow.core.example import example_pb2

from transforms.records import FeatureRecord
from transforms.write import example_codec


def _parse(data: bytes):
  example = example_pb2.Example()
  example.ParseFromString(data)
  return example.features.feature


@pytest.mark.parametrize('label', [None, 7, -1, 2**40, b'{"a": 1}'])
def test_encoded_example_parses_to_the_same_values(label):
  features = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(
      np.float32)
  record = FeatureRecord('cats/ü 1.jpg', features, label)
  parsed = _parse(example_codec.encode_feature_example(record))
  assert parsed['key'].bytes_list.value == ['cats/ü 1.jpg'.encode()]
  np.testing.assert_array_equal(np.array(parsed['features'].float_list.value,
                                         np.float32), features.reshape(-1))
  assert list(parsed['shape'].int64_list.value) == [3, 4, 5]
  if label is None:
    assert 'label' not in parsed
  elif isinstance(label, bytes):
    assert parsed['label'].bytes_list.value == [label]
  else:
    assert list(parsed['label'].int64_list.value) == [label]
  assert sorted(parsed) == sorted(
      ['key', 'features', 'shape'] + ([] if label is None else ['label']))


def test_matches_protobufs_own_encoding():
  features = np.arange(6, dtype=np.float32).reshape(2, 3)
  ours = example_codec.encode_feature_example(FeatureRecord('k', features, 3))
  example = example_pb2.Example()
  feature = example.features.feature
  feature['key'].bytes_list.value.append(b'k')
  feature['features'].float_list.value.extend(features.reshape(-1).tolist())
  feature['shape'].int64_list.value.extend([2, 3])
  feature['label'].int64_list.value.append(3)
  assert _parse(ours) == _parse(example.SerializeToString())


def test_a_record_of_several_layers_names_each_layers_values_and_shape():
  rng = np.random.default_rng(1)
  features = {'block3_pool': rng.standard_normal((2, 2, 3)).astype(np.float32),
              'block5_pool': rng.standard_normal(4).astype(np.float32)}
  parsed = _parse(example_codec.encode_feature_example(
      FeatureRecord('k', features, 5)))
  assert sorted(parsed) == ['features/block3_pool', 'features/block5_pool',
                            'key', 'label', 'shape/block3_pool',
                            'shape/block5_pool']
  for layer, values in features.items():
    values_key, shape_key = example_codec.layer_keys(layer)
    np.testing.assert_array_equal(
        np.array(parsed[values_key].float_list.value, np.float32),
        values.reshape(-1))
    assert list(parsed[shape_key].int64_list.value) == list(values.shape)


def test_image_examples_parse_like_demo_image_example():
  from pipeline import demo  # pylint: disable=import-outside-toplevel
  sample = demo.Sample('img-1.jpg', b'\xff\xd8 not really', 300)
  message = example_pb2.Example
  ours = message.FromString(example_codec.encode_image_example(
      sample.key, sample.data, sample.label))
  assert ours == message.FromString(demo.image_example(sample))
  negative = message.FromString(example_codec.encode_image_example(
      'k', b'x', -5))
  assert negative.features.feature['image/class/label'].int64_list.value == [
      -5]
  unlabelled = message.FromString(example_codec.encode_image_example(
      'k', b'x', None))
  assert set(unlabelled.features.feature) == {'image/encoded',
                                              'image/filename'}
