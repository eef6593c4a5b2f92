"""Run featurize the way the tests do, and read its outputs back."""
import glob
import json
import os

from pipeline import cli, demo

LOCAL = demo.LOCAL_CONFIG


def featurize(*args) -> int:
  return cli.main(['run', '--config', LOCAL, *args])


def read_outputs(directory: str):
  """Reads features back with tf.data, as a TensorFlow user would."""
  import tensorflow as tf
  spec = {'key': tf.io.FixedLenFeature([], tf.string),
          'features': tf.io.VarLenFeature(tf.float32),
          'shape': tf.io.VarLenFeature(tf.int64),
          'label': tf.io.VarLenFeature(tf.int64)}
  records = {}
  files = sorted(glob.glob(os.path.join(directory, 'features-*.tfrecord')))
  for raw in tf.data.TFRecordDataset(files):
    example = tf.io.parse_single_example(raw, spec)
    shape = tf.sparse.to_dense(example['shape']).numpy()
    label = tf.sparse.to_dense(example['label']).numpy()
    key = example['key'].numpy().decode()
    assert key not in records, f'duplicate key {key}'
    records[key] = (tf.sparse.to_dense(example['features']).numpy().reshape(
        shape), int(label[0]) if len(label) else None)
  return records


def read_errors(directory: str):
  lines = []
  for path in sorted(glob.glob(os.path.join(directory, 'errors-*.jsonl'))):
    with open(path) as f:
      lines.extend(json.loads(line) for line in f)
  return lines
