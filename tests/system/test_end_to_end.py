"""End to end on the DirectRunner (FnApiRunner) over real photos.

One run over all three formats plus bad inputs is shared by most tests;
its features are checked against the same Keras VGG16 called directly.
"""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.support import datasets
from tests.support.outputs import (LOCAL, featurize, read_errors,
                                   read_outputs)
from transforms.decode import imaging


def reference_features(weights: str, data: bytes, layer='block5_pool',
                       pooling=None) -> np.ndarray:
  """The same Keras model called directly on one preprocessed image."""
  import keras
  cache = reference_features.__dict__.setdefault('models', {})
  if (weights, layer, pooling) not in cache:
    base = keras.applications.VGG16(include_top=False, weights=weights,
                                    pooling=None)
    output = base.get_layer(layer).output
    if pooling == 'avg':
      output = keras.layers.GlobalAveragePooling2D()(output)
    cache[(weights, layer, pooling)] = keras.Model(base.input, output)
  pixels = imaging.decode_image(data, imaging.DecodeConfig())
  x = keras.applications.vgg16.preprocess_input(
      pixels[None].astype(np.float32))
  return cache[(weights, layer, pooling)].predict_on_batch(x)[0]


@pytest.fixture(scope='module')
def mixed_run(tmp_path_factory, notop_weights):
  root = tmp_path_factory.mktemp('mixed')
  ds = datasets.write_dataset(str(root / 'input'))
  out = str(root / 'out')
  status = featurize('--input', str(root / 'input' / '**'), '--output', out,
                     '--weights', notop_weights, '--max-error-fraction', '1',
                     '--batch-size', '4')
  return ds, out, status


def test_every_image_is_one_record_or_one_error_line(mixed_run):
  ds, out, status = mixed_run
  assert status == 0
  records = read_outputs(out)
  errors = read_errors(out)
  assert set(records) == set(ds.images)
  assert len(errors) == len(ds.errors)  # one line per failed image
  assert {e['key']: e['error_type'] for e in errors} == ds.errors
  manifest = json.load(open(os.path.join(out, 'manifest.json')))
  assert manifest['counts'] == {'images_in': len(ds.images) + len(ds.errors),
                                'features': len(ds.images),
                                'errors': len(ds.errors)}


def test_features_equal_keras_called_directly(mixed_run, notop_weights):
  ds, out, _ = mixed_run
  records = read_outputs(out)
  keys = sorted(ds.images)
  expected = {k: reference_features(notop_weights, ds.images[k]) for k in keys}
  for key in keys:
    got = records[key][0]
    assert got.shape == (7, 7, 512)
    scale = max(1.0, float(np.abs(expected[key]).max()))
    np.testing.assert_allclose(got, expected[key], rtol=1e-4,
                               atol=1e-4 * scale, err_msg=key)
  # Every key carries its own image's features, not a neighbour's: the
  # photos differ, so a mix-up would be far outside the tolerance.
  distinct = {k: v for k, v in expected.items() if k.startswith('files/')
              and not k.startswith('files/zoo/')}
  for key in distinct:
    nearest = min(distinct, key=lambda other: np.abs(
        records[key][0] - distinct[other]).max())
    assert nearest == key


def test_labels_pass_through(mixed_run):
  ds, out, _ = mixed_run
  records = read_outputs(out)
  for key, label in ds.labels.items():
    assert records[key][1] == label, key
  assert records['files/chelsea.jpg'][1] is None


def test_exif_rotated_image_has_the_upright_features(mixed_run):
  _, out, _ = mixed_run
  records = read_outputs(out)
  np.testing.assert_allclose(records['files/zoo/exif_rotated.png'][0],
                             records['files/zoo/upright.png'][0], rtol=1e-5,
                             atol=1e-4)


def test_error_lines_say_where_and_why(mixed_run):
  _, out, _ = mixed_run
  errors = {e['key']: e for e in read_errors(out)}
  bomb = errors['files/zoo/bomb.png']
  assert bomb['stage'] == 'decode'
  assert bomb['source'].endswith('files/zoo/bomb.png')
  assert '30000x30000' in bomb['message']
  assert errors['files/zoo/zero_byte.jpg']['message'] == 'zero-byte image'
  cut = next(e for e in errors.values() if e['error_type'] == 'truncated_tar')
  assert cut['stage'] == 'read' and cut['source'].endswith('shard-00001.tar')


def test_manifest_describes_the_run_and_comes_with_success(mixed_run,
                                                           notop_weights):
  ds, out, _ = mixed_run
  import hashlib
  manifest = json.load(open(os.path.join(out, 'manifest.json')))
  assert os.path.exists(os.path.join(out, '_SUCCESS'))
  assert manifest['status'] == 'succeeded'
  assert manifest['model'] == 'VGG16' and manifest['layer'] == 'block5_pool'
  assert manifest['precision'] == 'float32'
  assert manifest['weights']['file'] == os.path.basename(notop_weights)
  assert manifest['weights']['sha256'] == hashlib.sha256(
      open(notop_weights, 'rb').read()).hexdigest()
  assert manifest['preprocessing']['resize'] == 'center-crop'
  assert manifest['versions']['apache-beam'] == '2.77.0'
  shards = manifest['feature_shards']
  assert sum(s['records'] for s in shards) == len(ds.images)
  for shard in shards:
    assert os.path.exists(os.path.join(out, shard['path']))
  on_disk = sorted(os.path.basename(p) for p in glob.glob(
      os.path.join(out, 'features-*')))
  assert on_disk == sorted(s['path'] for s in shards)
  assert not glob.glob(os.path.join(out, '.temp-*'))
  inputs = {os.path.basename(s['path']): s['images']
            for s in manifest['input_shards']}
  assert inputs['part-00001-of-00002.tfrecord'] == 5  # 4 photos + 1 corrupt
  assert inputs['shard-00001.tar'] == 3


def test_tfrecord_package_reads_the_same_features(mixed_run):
  _, out, _ = mixed_run
  records = read_outputs(out)
  # In a fresh process: the tfrecord package cannot share one with TF.
  script = ('import sys, json; from pipeline.read_features import '
            'iter_features\nout = {r.key: [float(r.features.sum()), '
            'list(r.features.shape), r.label] '
            'for r in iter_features(sys.argv[1])}'
            '\nassert "tensorflow" not in sys.modules\nprint(json.dumps(out))')
  result = subprocess.run([sys.executable, '-c', script, out], check=True,
                          capture_output=True, text=True)
  theirs = json.loads(result.stdout)
  assert set(theirs) == set(records)
  for key, (total, shape, label) in theirs.items():
    assert shape == list(records[key][0].shape)
    assert total == pytest.approx(float(records[key][0].sum()), rel=1e-5)
    assert label == records[key][1]


def test_a_finished_run_is_not_overwritten(mixed_run, notop_weights, capsys):
  ds, out, _ = mixed_run
  before = os.path.getmtime(os.path.join(out, 'manifest.json'))
  status = featurize('--input', os.path.join(ds.root, '**'), '--output', out,
                     '--weights', notop_weights)
  assert status == 1
  assert 'already holds a finished run' in capsys.readouterr().err
  assert os.path.getmtime(os.path.join(out, 'manifest.json')) == before


def test_empty_match_is_a_clear_error(tmp_path, capsys):
  status = featurize('--input', str(tmp_path / 'nothing-*.tfrecord'),
                     '--output', str(tmp_path / 'out'), '--weights', 'random')
  assert status == 2  # usage
  assert 'matches no files' in capsys.readouterr().err
  assert not os.path.exists(tmp_path / 'out')


def test_too_many_errors_fail_loudly_without_success(tmp_path, capsys):
  root = tmp_path / 'input'
  ds = datasets.write_dataset(str(root), formats=('files',))
  out = str(tmp_path / 'out')
  status = featurize('--input', str(root / '**'), '--output', out,
                     '--weights', 'random', '--layer', 'block1_pool',
                     '--max-error-fraction', '0.1')
  assert status == 3  # too many bad images
  assert 'max-error-fraction' in capsys.readouterr().err
  assert not os.path.exists(os.path.join(out, '_SUCCESS'))
  manifest = json.load(open(os.path.join(out, 'manifest.json')))
  assert manifest['status'] == 'too_many_errors'
  assert manifest['counts']['errors'] == len(ds.errors)
  # A rerun with a looser threshold may reuse the folder and finishes it.
  assert featurize('--input', str(root / '**'), '--output', out,
                   '--weights', 'random', '--layer', 'block1_pool',
                   '--max-error-fraction', '0.5') == 0
  assert os.path.exists(os.path.join(out, '_SUCCESS'))


@pytest.mark.parametrize('input_format, extra', [
    ('tfrecord', []),
    ('webdataset', ['--direct_num_workers=2',
                    '--direct_running_mode=multi_processing']),
    ('files', []),
])
def test_each_format_explicitly(tmp_path, notop_weights, input_format, extra):
  ds = datasets.write_dataset(str(tmp_path / 'in'), formats=(input_format,),
                              bad=False)
  out = str(tmp_path / 'out')
  pattern = str(tmp_path / 'in' / input_format / '*')
  if input_format == 'files':
    pattern = str(tmp_path / 'in' / '**')
  assert featurize('--input', pattern, '--output', out, '--format',
                   input_format, '--weights', notop_weights, '--pooling',
                   'avg', *extra) == 0
  records = read_outputs(out)
  assert set(records) == set(ds.images)
  for key, data in ds.images.items():
    expected = reference_features(notop_weights, data, pooling='avg')
    np.testing.assert_allclose(records[key][0], expected, rtol=1e-4,
                               atol=1e-4 * max(1.0, np.abs(expected).max()))


def test_one_model_per_process_shared_by_threads_and_bundles(tmp_path,
                                                             notop_weights):
  from pipeline import options
  from pipeline.run import run_job
  ds = datasets.write_dataset(str(tmp_path / 'in'), bad=False)
  # Two worker threads in this process, many shards and small batches:
  # many bundles and batches, yet the model must be built once.
  job, beam_args, _ = options.parse_run_args([
      '--input', str(tmp_path / 'in' / '**'), '--output',
      str(tmp_path / 'out'), '--weights', notop_weights, '--pooling', 'max',
      '--batch-size', '3', '--config', LOCAL, '--direct_num_workers=2',
      '--direct_running_mode=multi_threading'])
  summary = run_job(job, beam_args)
  assert summary.model_loads == 1
  assert set(read_outputs(str(tmp_path / 'out'))) == set(ds.images)


@pytest.mark.parametrize('large_model, expected_loads', [(False, 2),
                                                          (True, 1)])
def test_model_loads_per_process_or_per_machine(tmp_path, notop_weights,
                                                large_model, expected_loads):
  from pipeline import options
  from pipeline.run import run_job
  ds = datasets.write_dataset(str(tmp_path / 'in'), bad=False)
  job, beam_args, _ = options.parse_run_args([
      '--input', str(tmp_path / 'in' / '**'), '--output',
      str(tmp_path / 'out'), '--weights', notop_weights, '--pooling', 'avg',
      '--batch-size', '2', '--config', LOCAL, '--direct_num_workers=2',
      '--direct_running_mode=multi_processing'] +
      (['--large-model'] if large_model else []))
  summary = run_job(job, beam_args)
  # Two worker processes: one model each, or one for the machine.
  assert summary.model_loads == expected_loads
  records = read_outputs(str(tmp_path / 'out'))
  assert set(records) == set(ds.images)
  for key in ('files/coffee.jpg', 'webdataset/chelsea', 'tfrecord/rocket.jpg'):
    expected = reference_features(notop_weights, ds.images[key],
                                  pooling='avg')
    np.testing.assert_allclose(records[key][0], expected, rtol=1e-4,
                               atol=1e-4 * max(1.0, np.abs(expected).max()))
