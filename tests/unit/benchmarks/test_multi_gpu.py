"""benchmarks.gpu.multi_gpu: how a run on several GPUs is compared with
one GPU's (its features read back from real output files), its speedups,
and the targets it prints."""
import json
import os

import numpy as np

from benchmarks.gpu import multi_gpu
from transforms.read import tfrecord_framing
from transforms.records import FeatureRecord
from transforms.write import example_codec


def _output(folder, features, errors=()):
  """A finished run's folder, as featurize writes one."""
  os.makedirs(folder)
  name = 'features-00000-of-00001.tfrecord'
  with open(os.path.join(folder, name), 'wb') as f:
    for key, values in features.items():
      example = example_codec.encode_feature_example(
          FeatureRecord(key, np.asarray(values, np.float32)))
      f.write(tfrecord_framing.encode_record(example))
  with open(os.path.join(folder, 'errors-00000-of-00001.jsonl'), 'w') as f:
    f.writelines(json.dumps(e) + '\n' for e in errors)
  with open(os.path.join(folder, 'manifest.json'), 'w') as f:
    json.dump({'feature_shards': [{'path': name}],
               'error_shards': [{'path': 'errors-00000-of-00001.jsonl'}]}, f)
  open(os.path.join(folder, '_SUCCESS'), 'w').close()
  return str(folder)


BAD = {'key': 'c', 'source': 's', 'stage': 'decode', 'error_type': 'x',
       'message': 'm'}


def test_equal_outputs_compare_equal_and_others_say_how_they_differ(tmp_path):
  one = _output(tmp_path / 'one', {'a': [1, 2, 3], 'b': [0, 1, 0]}, [BAD])
  same = _output(tmp_path / 'same', {'b': [0, 1, 0], 'a': [1, 2, 3]}, [BAD])
  compared = multi_gpu.compare_outputs(one, same)
  assert compared['equal'] and compared['identical']
  assert compared['min_cosine'] == 1.0
  close = _output(tmp_path / 'close', {'a': [1, 2, 3.001], 'b': [0, 1, 0]},
                  [BAD])
  compared = multi_gpu.compare_outputs(one, close)
  assert compared['equal'] and not compared['identical']
  assert 0 < compared['max_abs_difference'] < 0.01
  lost = _output(tmp_path / 'lost', {'a': [1, 2, 3]}, [BAD])
  assert not multi_gpu.compare_outputs(one, lost)['same_keys']
  assert not multi_gpu.compare_outputs(one, lost)['equal']
  other = _output(tmp_path / 'other', {'a': [3, 2, 1], 'b': [0, 1, 0]}, [])
  compared = multi_gpu.compare_outputs(one, other)
  assert not compared['same_error_lines'] and not compared['equal']
  assert compared['min_cosine'] < multi_gpu.MIN_COSINE


def test_speedups_and_targets():
  rates = {1: 12000.0, 2: 22000.0, 4: 40000.0}
  assert multi_gpu.speedups(rates) == {1: 1.0, 2: 1.833, 4: 3.333}
  results = {n: {'speedup': s, 'host_peak_rss_mib_small': 100.0,
                 'host_peak_rss_mib': 105.0}
             for n, s in multi_gpu.speedups(rates).items()}
  results[2]['against_one_gpu'] = {'same_keys': True,
                                   'same_error_lines': True,
                                   'min_cosine': 0.99999, 'equal': True}
  passed = {text.split(' (')[0]: ok
            for text, ok in multi_gpu.targets(results)}
  assert passed['2 GPUs >= 1.8x one GPU'] is True
  assert passed['4 GPUs >= 3.5x one GPU'] is False
  assert passed['2 GPUs: host_peak_rss_mib flat'] is True
  assert passed["2 GPUs: features equal to one GPU's"] is True
  assert multi_gpu.speedups({1: None, 2: 5.0}) == {1: None, 2: None}
