"""``featurize run --device gpu`` on the DirectRunner (FnApiRunner)."""
import glob
import json
import os

import numpy as np

from pipeline import cli, demo
from tests.support import datasets
from tests.support.outputs import read_errors


def read_features(out):
  """Reads the features back with the tfrecord package (no TensorFlow)."""
  from tfrecord.reader import tfrecord_loader  # pylint: disable=import-outside-toplevel
  records = {}
  for path in sorted(glob.glob(os.path.join(out, 'features-*.tfrecord'))):
    for example in tfrecord_loader(path, None, {'key': 'byte',
                                                'features': 'float',
                                                'shape': 'int'}):
      key = bytes(example['key']).decode()
      assert key not in records
      records[key] = example['features'].reshape(example['shape'])
  return records


def test_run_on_tfrecord_shards_counts_every_image(tmp_path, gpu_weights):
  ds = datasets.write_dataset(str(tmp_path / 'input'), formats=('tfrecord',))
  out = str(tmp_path / 'out')
  status = cli.main(['run', '--config', demo.LOCAL_CONFIG, '--input',
                     str(tmp_path / 'input' / '**'), '--output', out,
                     '--weights', gpu_weights, '--device', 'gpu',
                     '--batch-size', '4', '--max-error-fraction', '1',
                     '--pooling', 'avg', '--quiet'])
  assert status == 0
  manifest = json.load(open(os.path.join(out, 'manifest.json')))
  assert manifest['device'] == 'gpu' and manifest['status'] == 'succeeded'
  features, errors = read_features(out), read_errors(out)
  assert set(features) == set(ds.images)
  assert {e['key']: e['error_type'] for e in errors} == ds.errors
  assert all(f.shape == (512,) and np.isfinite(f).all()
             for f in features.values())
  assert sum(s['records'] for s in manifest['feature_shards']) == len(features)
  assert os.path.exists(os.path.join(out, '_SUCCESS'))
