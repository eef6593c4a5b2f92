"""Several layers from one pass, end to end on the DirectRunner over real
photos: each layer's features equal a single-layer run's, and everything
that reads outputs (the manifest, ``featurize inspect``, the TensorFlow-free
reader, the docs' tf.data recipe, a refresh) knows the form."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from pipeline import cli, demo, options
from pipeline.refresh import refresh_job as refresh_run, versions
from tests.support import datasets
from tests.support.paths import ROOT

LOCAL = demo.LOCAL_CONFIG

LAYERS = 'block3_pool,block5_pool'
POOLINGS = 'none,avg'


def featurize(*args) -> int:
  return cli.main(['run', '--config', LOCAL, *args])


@pytest.fixture(scope='module')
def runs(tmp_path_factory, notop_weights):
  """One run of two layers, and one run of each layer alone."""
  root = tmp_path_factory.mktemp('layers')
  datasets.write_dataset(str(root / 'input'), formats=('tfrecord',),
                         bad=False)
  pattern = str(root / 'input' / '**')
  common = ('--input', pattern, '--weights', notop_weights, '--batch-size',
            '3')
  outs = {}
  for name, layer, pooling in (('both', LAYERS, POOLINGS),
                               ('block3_pool', 'block3_pool', 'none'),
                               ('block5_pool', 'block5_pool', 'avg')):
    outs[name] = str(root / name)
    assert featurize(*common, '--output', outs[name], '--layer', layer,
                     '--pooling', pooling) == 0
  return outs


def _tfrecord_package_read(out: str) -> dict:
  """Each record through ``iter_features``, in a process without TF."""
  script = (
      'import sys, json\nfrom pipeline.read_features import iter_features\n'
      'out = {}\nfor r in iter_features(sys.argv[1]):\n'
      '  f = r.features\n'
      '  out[r.key] = ({k: [v.reshape(-1).tolist(), list(v.shape)] for k, v '
      'in f.items()} if isinstance(f, dict) else [f.reshape(-1).tolist(), '
      'list(f.shape)])\n'
      'assert "tensorflow" not in sys.modules\nprint(json.dumps(out))')
  result = subprocess.run([sys.executable, '-c', script, out], check=True,
                          capture_output=True, text=True, cwd=ROOT)
  return json.loads(result.stdout)


def test_each_layer_equals_its_own_run(runs):
  both = _tfrecord_package_read(runs['both'])
  assert len(both) >= 4
  for layer in LAYERS.split(','):
    alone = _tfrecord_package_read(runs[layer])
    assert set(alone) == set(both)
    for key, (values, shape) in alone.items():
      got_values, got_shape = both[key][layer]
      assert got_shape == shape, (key, layer)
      np.testing.assert_allclose(got_values, values, rtol=1e-5, atol=1e-5,
                                 err_msg=f'{key} {layer}')
  shapes = {layer: shape for layer, (_, shape) in next(iter(
      both.values())).items()}
  assert shapes == {'block3_pool': [28, 28, 256], 'block5_pool': [512]}


def test_the_gpu_path_gives_each_layer_as_the_cpu_path(runs, notop_weights):
  """``--device gpu`` on JAX's CPU device with nvJPEG's stand-in
  (``backend.ON_CPU_ENV``): the same keys, and each layer's features as
  close to the CPU path's as a single layer's are (test_gpu_path_on_cpu)."""
  from transforms.extract import backend  # pylint: disable=import-outside-toplevel
  out = os.path.join(os.path.dirname(runs['both']), 'gpu')
  env = dict(os.environ, **{backend.ON_CPU_ENV: '1'})
  env.pop('KERAS_BACKEND', None)
  with open(os.path.join(runs['both'], 'manifest.json')) as f:
    pattern = json.load(f)['input']['pattern']
  result = subprocess.run(
      [sys.executable, '-m', 'pipeline.cli', 'run', '--config', LOCAL,
       '--input', pattern, '--output', out, '--weights', notop_weights,
       '--device', 'gpu', '--precision', 'float32', '--batch-size', '3',
       '--layer', LAYERS, '--pooling', POOLINGS, '--quiet'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  gpu, cpu = _tfrecord_package_read(out), _tfrecord_package_read(runs['both'])
  assert set(gpu) == set(cpu)
  for key in cpu:
    for layer in LAYERS.split(','):
      got, want = (np.asarray(r[key][layer][0]) for r in (gpu, cpu))
      assert gpu[key][layer][1] == cpu[key][layer][1]
      cosine = got @ want / np.linalg.norm(got) / np.linalg.norm(want)
      assert cosine >= 0.99, (key, layer, cosine)


def test_the_manifest_lists_each_layer(runs):
  with open(os.path.join(runs['both'], 'manifest.json')) as f:
    describe = json.load(f)  # a run's manifest holds describe's keys
  assert describe['layer'] == LAYERS and describe['pooling'] == POOLINGS
  assert 'feature_shape' not in describe
  assert describe['outputs'] == [
      {'layer': 'block3_pool', 'pooling': 'none',
       'feature_shape': [28, 28, 256], 'features_key': 'features/block3_pool',
       'shape_key': 'shape/block3_pool'},
      {'layer': 'block5_pool', 'pooling': 'avg', 'feature_shape': [512],
       'features_key': 'features/block5_pool',
       'shape_key': 'shape/block5_pool'}]
  with open(os.path.join(runs['block5_pool'], 'manifest.json')) as f:
    single = json.load(f)
  assert single['feature_shape'] == [512] and 'outputs' not in single


def test_inspect_reports_each_layer(runs, capsys):
  assert cli.main(['inspect', runs['both']]) == 0
  out = capsys.readouterr().out
  assert re.search(r'layer block3_pool\s+none pooling, shape \[28, 28, 256\]',
                   out), out
  assert re.search(r'layer block5_pool\s+avg pooling, shape \[512\]', out)
  assert 'feature shape' not in out


def _docs_multi_layer_recipe() -> str:
  with open(os.path.join(ROOT, 'docs', 'input-and-output.md')) as f:
    text = f.read()
  section = text[text.index('**Several layers from one pass.**'):]
  return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_the_readme_tf_data_recipe_reads_each_layer(runs):
  code = _docs_multi_layer_recipe().replace(
      "'out/features-", repr(runs['both'] + '/features-')[:-1])
  scope = {}
  exec(code, scope)  # pylint: disable=exec-used
  got = {key.numpy().decode(): {k: v.numpy() for k, v in layers.items()}
         for key, layers in scope['ds']}
  alone = _tfrecord_package_read(runs['block3_pool'])
  assert set(got) == set(alone)
  for key, (values, shape) in alone.items():
    assert list(got[key]['block3_pool'].shape) == shape
    np.testing.assert_allclose(got[key]['block3_pool'].reshape(-1), values,
                               rtol=1e-5, atol=1e-5)
    assert got[key]['block5_pool'].shape == (512,)


def test_a_refresh_that_adds_a_layer_recomputes_every_shard_once(tmp_path,
                                                                  notop_weights):
  shards = tmp_path / 'shards'
  datasets.write_dataset(str(shards), formats=('tfrecord',), bad=False)
  pattern = str(shards / '**')
  root = str(tmp_path / 'dataset')

  def refresh(*extra):
    job = options.parse_run_args(
        ['--config', LOCAL, '--input', pattern, '--output', root,
         '--weights', notop_weights, '--batch-size', '3', *extra])
    return refresh_run.refresh(job.job, job.beam_args, log=lambda _: None)

  first = refresh('--layer', 'block5_pool', '--pooling', 'avg')
  assert first.published
  added = refresh('--layer', 'block5_pool,block3_pool', '--pooling',
                  'avg,none')
  assert added.published and not added.plan.reused
  assert len(added.plan.changed) == len(first.manifest['shards'])
  assert added.manifest['model_fingerprint'] != first.manifest[
      'model_fingerprint']
  assert [o['layer'] for o in added.manifest['describe']['outputs']] == [
      'block3_pool', 'block5_pool']
  # The new version holds both layers in every record, none of the old.
  records = _tfrecord_package_read(root)
  assert records and all(sorted(r) == ['block3_pool', 'block5_pool']
                         for r in records.values())
  again = refresh('--layer', 'block3_pool,block5_pool', '--pooling',
                  'none,avg')
  assert not again.published and again.images_read == 0  # same set, same print
  assert versions.read_pointer(root).version == added.manifest['version']
