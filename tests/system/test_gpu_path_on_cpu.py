"""The GPU path's code on a machine without a GPU.

Keras on JAX runs on JAX's CPU device and a Pillow stand-in takes
nvJPEG's place (``transforms/extract/backend.py``, ``ON_CPU_ENV``). What these
tests prove: the JAX model gives the TensorFlow path's features (float32
within 1e-3, bfloat16 with cosine >= 0.999); the batching and the fallback
to the CPU decoder give the CPU run's error lines and set of features; the
run's counts and manifest hold. nvJPEG itself is tested on a GPU
(tests/gpu/).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline import cli, demo
from pipeline.runners.local_gpu import sharing
from tests.support import datasets, jax_features
from tests.support.arrays import cosines, relative_l2
from tests.support.outputs import read_errors, read_outputs
from tests.support.paths import ROOT
from tests.support.weights import write_model_weights
from transforms.extract import backend
from transforms.extract import models
from transforms.extract.gpu import settings as gpu_settings




def on_cpu_env() -> dict:
  env = dict(os.environ, **{backend.ON_CPU_ENV: '1'})
  env.pop('KERAS_BACKEND', None)  # the GPU path sets it
  return env


def tensorflow_features(weights: str, precision: str, pooling: str):
  # This process runs Keras on TensorFlow: the CPU path's own model.
  config = jax_features.model_config(weights, precision, pooling)
  model = models.build_feature_model(config)
  x = models.to_model_input(list(jax_features.demo_pixels()),
                           'caffe')
  return np.asarray(model.predict_on_batch(x), dtype=np.float32)


def jax_run(tmp_path, weights: str, precision: str, pooling: str):
  out = str(tmp_path / f'jax-{precision}-{pooling}.npz')
  subprocess.run([sys.executable, '-m', 'tests.support.jax_features', weights,
                  out, precision, pooling], check=True, cwd=ROOT,
                 env=on_cpu_env(),
                 timeout=600)
  return np.load(out)['features']


@pytest.mark.parametrize('pooling', ['none', 'avg'])
def test_jax_float32_features_equal_tensorflow_within_1e3(tmp_path,
                                                          notop_weights,
                                                          pooling):
  reference = tensorflow_features(notop_weights, 'float32', pooling)
  got = jax_run(tmp_path, notop_weights, 'float32', pooling)
  assert got.shape == reference.shape
  # Relative to the layer's scale: ReLU outputs have many values near 0,
  # where an element's own relative error means nothing (GPU_GROUNDWORK).
  scale = np.abs(reference).max()
  np.testing.assert_allclose(got, reference, rtol=1e-3, atol=1e-4 * scale)
  assert relative_l2(got, reference) < 1e-3
  # Different weights or pixels would be far off: the test can fail.
  assert relative_l2(got[::-1], reference) > 0.1


def test_jax_gives_each_of_several_layers_as_tensorflow_does(tmp_path,
                                                            notop_weights):
  """The GPU path's jitted function returns every requested layer, each
  within 1e-3 of the CPU path's model of the same layers."""
  layers, poolings = 'block2_pool,block4_conv3,block5_pool', 'max,none,avg'
  config = jax_features.model_config(notop_weights, 'float32', poolings,
                                     layers)
  reference = models.build_feature_model(config).predict_on_batch(
      models.to_model_input(list(jax_features.demo_pixels()),
                           'caffe'))
  out = str(tmp_path / 'layers.npz')
  subprocess.run([sys.executable, '-m', 'tests.support.jax_features',
                  notop_weights, out, 'float32', poolings, layers],
                 check=True, cwd=ROOT,
                 env=on_cpu_env(), timeout=600)
  got = np.load(out)
  assert sorted(got.files) == sorted(
      ['device'] + [f'features/{layer}' for layer in config.layers])
  for layer, want in zip(config.layers, reference):
    values = got[f'features/{layer}']
    assert values.shape[1:] == models.feature_shapes(config)[layer]
    scale = np.abs(want).max()
    np.testing.assert_allclose(values, want, rtol=1e-3, atol=1e-4 * scale,
                               err_msg=layer)


def test_jax_bfloat16_features_keep_cosine_0999_with_float32(tmp_path,
                                                             notop_weights):
  reference = tensorflow_features(notop_weights, 'float32', 'none')
  got = jax_run(tmp_path, notop_weights, 'bfloat16', 'none')
  assert np.isfinite(got).all()  # jaxlib 0.11 on CPU once gave NaNs
  assert cosines(got, reference).min() >= 0.999
  assert not np.array_equal(got, reference)  # it really ran in bfloat16


@pytest.fixture(scope='module')
def gpu_and_cpu_runs(tmp_path_factory, notop_weights):
  """The mixed dataset (every format, the image zoo's bad and odd images)
  through ``--device gpu`` on the CPU stand-in, and through the CPU path."""
  root = tmp_path_factory.mktemp('gpu-path')
  ds = datasets.write_dataset(str(root / 'input'))
  common = ['--config', demo.LOCAL_CONFIG, '--input',
            str(root / 'input' / '**'), '--weights', notop_weights,
            '--max-error-fraction', '1', '--pooling', 'avg']
  gpu_out, cpu_out = str(root / 'gpu'), str(root / 'cpu')
  # Batches of 4 with 29 images: full batches, a short last one, and
  # fallbacks mixed into device-decoded batches. Two bundle threads, each
  # with its own DoFn and helper thread, share the process's one model.
  gpu = subprocess.run(
      [sys.executable, '-m', 'pipeline.cli', 'run', *common, '--output',
       gpu_out, '--device', 'gpu', '--batch-size', '4', '--quiet',
       '--direct_num_workers=2', '--direct_running_mode=multi_threading'],
      cwd=ROOT, env=on_cpu_env(), capture_output=True, text=True, timeout=600)
  assert gpu.returncode == 0, gpu.stderr
  assert cli.main(['run', *common, '--output', cpu_out, '--quiet']) == 0
  return ds, gpu_out, cpu_out, gpu


def test_gpu_path_gives_the_cpu_paths_error_lines(gpu_and_cpu_runs):
  _, gpu_out, cpu_out, _ = gpu_and_cpu_runs

  def lines(out):
    return sorted((e['key'], e['source'], e['stage'], e['error_type'],
                   e['message']) for e in read_errors(out))

  cpu_lines = lines(cpu_out)
  assert len(cpu_lines) >= 5  # the zoo's bad images, truncated shards...
  assert lines(gpu_out) == cpu_lines


def test_gpu_path_gives_the_cpu_paths_features(gpu_and_cpu_runs):
  _, gpu_out, cpu_out, _ = gpu_and_cpu_runs
  gpu, cpu = read_outputs(gpu_out), read_outputs(cpu_out)
  assert sorted(gpu) == sorted(cpu)
  assert len(gpu) >= 20
  keys = sorted(cpu)
  got = np.stack([gpu[k][0] for k in keys])
  want = np.stack([cpu[k][0] for k in keys])
  assert [gpu[k][1] for k in keys] == [cpu[k][1] for k in keys]  # labels
  # Decoded at full size then resized, where the CPU path may decode a
  # large JPEG at 1/2..1/8 in the DCT: close, not identical.
  assert cosines(got, want).min() >= 0.99
  assert np.median(cosines(got, want)) >= 0.9999


def test_gpu_path_manifest_and_counts(gpu_and_cpu_runs):
  import json
  _, gpu_out, _, run = gpu_and_cpu_runs
  with open(os.path.join(gpu_out, 'manifest.json')) as f:
    manifest = json.load(f)
  assert manifest['device'] == 'gpu'
  assert manifest['batch_size'] == 4
  assert manifest['status'] == 'succeeded'
  shards = manifest['feature_shards']
  assert sum(s['records'] for s in shards) + len(read_errors(gpu_out)) == (
      sum(s['images'] for s in manifest['input_shards']))
  assert sum(s['records'] for s in shards) == len(read_outputs(gpu_out))
  assert os.path.exists(os.path.join(gpu_out, '_SUCCESS'))
  assert 'jax' in manifest['versions']
  assert 'VGG16 loaded 1 time(s) over all workers' in run.stdout
  # The photos include large JPEGs (retina 1411x1411, hubble 872x1000):
  # decoded on the device, as every baseline JPEG.
  assert 'decoded by nvJPEG' in run.stdout, run.stdout


def test_unknown_devices_are_refused():
  with pytest.raises(ValueError, match='device must be one of'):
    models.ModelConfig(device='tpu')


def test_batch_defaults_depend_on_the_device():
  from pipeline import options  # pylint: disable=import-outside-toplevel
  job = options.parse_run_args(['--input', 'x', '--output', 'y',
                                '--device', 'gpu']).job
  assert (job.model.batch_size, job.model.max_batch_bytes) == (256, 8 << 30)
  assert models.effective_batch_size(job.model) == 256
  job = options.parse_run_args(['--input', 'x', '--output', 'y']).job
  assert (job.model.batch_size, job.model.max_batch_bytes) == (16, 1 << 30)
  job = options.parse_run_args(['--input', 'x', '--output', 'y', '--device',
                                'gpu', '--batch-size', '64']).job
  assert job.model.batch_size == 64


def test_precision_defaults_to_bfloat16_on_gpu_and_the_run_says_so(tmp_path):
  from pipeline import console, options  # pylint: disable=import-outside-toplevel
  base = ['--input', 'x', '--output', 'y']
  gpu = options.parse_run_args(base + ['--device', 'gpu']).job.model
  assert gpu.precision == 'bfloat16'
  assert options.parse_run_args(base).job.model.precision == 'float32'
  assert not options.parse_command(
      base + ['--device', 'gpu']).precision_given
  assert 'the gpu default' in console.precision_line(gpu, False)
  chosen = options.parse_run_args(
      base + ['--device', 'gpu', '--precision', 'float32']).job.model
  assert chosen.precision == 'float32'
  assert options.parse_command(
      base + ['--precision', 'float32']).precision_given
  assert 'true float32 (--precision float32' in console.precision_line(
      chosen, True)
  # A run config's job defaults count as chosen.
  config = tmp_path / 'gpu.yaml'
  config.write_text('runner: FnApiRunner\nfeaturize:\n  precision: float32\n')
  argv = base + ['--device', 'gpu', '--config', str(config)]
  assert options.parse_run_args(argv).job.model.precision == 'float32'
  assert options.parse_command(argv).precision_given
  assert console.precision_line(
      options.parse_run_args(base).job.model, False) is None  # cpu


def test_a_gpu_out_of_memory_says_what_to_change(monkeypatch):
  from pipeline import console  # pylint: disable=import-outside-toplevel
  from pipeline.launch import JobFailed  # pylint: disable=import-outside-toplevel
  # What run 12's 16 processes printed (JAX's status), in one line.
  said = ('RESOURCE_EXHAUSTED: Out of memory while trying to allocate '
          '3289751552 bytes. [while running \'ExtractOnDevice/...\']')
  monkeypatch.setenv(backend.GPU_PROCESSES_ENV, '16')
  line = console.failure_message(JobFailed(said), verbose=False)
  first, hint = line.split('\n')
  assert first.startswith('featurize: error: RESOURCE_EXHAUSTED')
  assert 'each of the 16 worker processes sharing a GPU gets 5%' in hint
  assert '--direct_num_workers' in hint and '--batch-size' in hint
  monkeypatch.setenv(backend.GPU_PROCESSES_ENV, '1')
  hint = console.gpu_memory_hint('CUDA out of memory. Tried to allocate')
  assert 'worker processes' not in hint and '--batch-size' in hint
  # Any other failure prints its one line alone.
  assert '\n' not in console.failure_message(JobFailed('disk full'), False)
  assert console.gpu_memory_hint('OOM when allocating tensor') is None


def test_processes_sharing_a_gpu_take_their_share(monkeypatch):
  from transforms.extract import backend  # pylint: disable=import-outside-toplevel
  assert backend.memory_fraction(1) == 0.4
  assert backend.memory_fraction(2) == 0.4
  assert backend.memory_fraction(4) == 0.2
  assert backend.memory_fraction(8) == 0.1
  assert backend.cpu_decode_threads(cores=16, processes=4) == 4
  assert backend.cpu_decode_threads(cores=2, processes=4) == 1
  # Unless the GPU settings give a count (for the benchmark).
  given = gpu_settings.from_environ(
      {gpu_settings.SETTINGS_ENV: '{"cpu_decode_threads": 3}'})
  assert given.cpu_decode_threads == 3
  # The launcher gives its workers their share, unless the user chose one.
  monkeypatch.delenv('XLA_PYTHON_CLIENT_MEM_FRACTION', raising=False)
  monkeypatch.delenv('FEATURIZE_JAX_MEMORY_FRACTION_DEFAULTED',
                     raising=False)
  monkeypatch.delenv(backend.GPU_PROCESSES_ENV, raising=False)
  sharing.share_gpus(4)
  assert os.environ['XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.2'
  assert backend.gpu_processes() == 4
  monkeypatch.setenv('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.5')
  monkeypatch.delenv('FEATURIZE_JAX_MEMORY_FRACTION_DEFAULTED')
  sharing.share_gpus(2)
  assert os.environ['XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.5'


def test_the_gpu_keeps_compiled_models_in_a_cache(monkeypatch, tmp_path):
  from transforms.extract import backend  # pylint: disable=import-outside-toplevel
  monkeypatch.delenv(backend.ON_CPU_ENV, raising=False)
  monkeypatch.delenv(backend.COMPILATION_CACHE_ENV, raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  for name in ('XLA_PYTHON_CLIENT_PREALLOCATE',
               'XLA_PYTHON_CLIENT_MEM_FRACTION',
               'FEATURIZE_JAX_MEMORY_FRACTION_DEFAULTED', 'JAX_PLATFORMS'):
    monkeypatch.delenv(name, raising=False)
  backend._jax_environment()  # pylint: disable=protected-access
  assert os.environ[backend.COMPILATION_CACHE_ENV] == str(
      tmp_path / 'featurize' / 'jax')
  assert (tmp_path / 'featurize' / 'jax').is_dir()
  # A home where it cannot be made: no cache, and the run goes on.
  monkeypatch.delenv(backend.COMPILATION_CACHE_ENV)
  (tmp_path / 'file').write_text('')
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'file'))
  backend._jax_environment()  # pylint: disable=protected-access
  assert os.environ[backend.COMPILATION_CACHE_ENV] == ''
  # The user's own choice ('' turns it off) stays.
  monkeypatch.setenv(backend.COMPILATION_CACHE_ENV, '')
  backend._jax_environment()  # pylint: disable=protected-access
  assert os.environ[backend.COMPILATION_CACHE_ENV] == ''
  # The CPU stand-in (tests) writes no cache.
  monkeypatch.delenv(backend.COMPILATION_CACHE_ENV)
  monkeypatch.setenv(backend.ON_CPU_ENV, '1')
  backend._jax_environment()  # pylint: disable=protected-access
  assert backend.COMPILATION_CACHE_ENV not in os.environ


def test_local_worker_processes_follow_the_runner_flags():
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
  from pipeline.run import local_worker_processes  # pylint: disable=import-outside-toplevel
  assert local_worker_processes(PipelineOptions([])) == 1
  assert local_worker_processes(PipelineOptions(
      ['--direct_num_workers=4', '--direct_running_mode=in_memory'])) == 1
  assert local_worker_processes(PipelineOptions(
      ['--direct_num_workers=4',
       '--direct_running_mode=multi_processing'])) == 4


def _run_again(gpu_out, out, notop_weights, flags, env=None):
  """``featurize run --device gpu`` on the module's input again, with
  ``flags``; returns the finished process."""
  root = os.path.dirname(gpu_out)
  run = subprocess.run(
      [sys.executable, '-m', 'pipeline.cli', 'run', '--config',
       demo.LOCAL_CONFIG, '--input', os.path.join(root, 'input', '**'),
       '--weights', notop_weights, '--max-error-fraction', '1', '--pooling',
       'avg', '--output', out, '--device', 'gpu', '--batch-size', '4',
       *flags],
      cwd=ROOT, env=env or on_cpu_env(), capture_output=True, text=True,
      timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  return run


def _assert_same_run(out, errors_of, features_of):
  """``out``'s error lines are ``errors_of``'s, and its keys and features
  ``features_of``'s (same pixels, same model)."""

  def lines(folder):
    return sorted((e['key'], e['stage'], e['error_type'], e['message'])
                  for e in read_errors(folder))

  assert lines(out) == lines(errors_of)
  got, want = read_outputs(out), read_outputs(features_of)
  assert sorted(got) == sorted(want)
  keys = sorted(want)
  similarity = cosines(np.stack([got[k][0] for k in keys]),
                       np.stack([want[k][0] for k in keys]))
  assert similarity.min() >= 0.9999


def test_large_model_one_server_process_feeds_two_workers(gpu_and_cpu_runs,
                                                           tmp_path,
                                                           notop_weights):
  """--large-model on gpu: two worker processes send their batches to one
  server process that owns the device
  (``transforms/extract/gpu/server.py``), and give what one process
  gives."""
  _, gpu_out, cpu_out, _ = gpu_and_cpu_runs
  out = str(tmp_path / 'served')
  run = _run_again(gpu_out, out, notop_weights,
                   ['--large-model', '--direct_num_workers=2',
                    '--direct_running_mode=multi_processing'])
  assert 'VGG16 loaded 1 time(s) over all workers' in run.stdout
  assert 'decoded by nvJPEG' in run.stdout
  _assert_same_run(out, errors_of=cpu_out, features_of=gpu_out)


def test_worker_processes_share_the_gpu_through_mps(gpu_and_cpu_runs,
                                                    tmp_path, notop_weights):
  """Two worker processes on the GPU: the run starts an MPS daemon of its
  own before they start, says so, and quits it after; the features are
  the one-process run's. NVIDIA's control program is a recording
  stand-in (``test_gpu_mps.fake_control``), as this machine has no GPU."""
  from tests.support.fake_mps import calls, fake_control
  from pipeline.runners.local_gpu import mps
  _, gpu_out, _, _ = gpu_and_cpu_runs
  out = str(tmp_path / 'mps')
  env = on_cpu_env()
  env.pop(mps.PIPE_ENV, None)
  env.pop(mps.MPS_ENV, None)
  env['PATH'] = fake_control(tmp_path) + os.pathsep + env['PATH']
  run = _run_again(gpu_out, out, notop_weights,
                   ['--direct_num_workers=2',
                    '--direct_running_mode=multi_processing'], env)
  assert '2 worker processes share the GPU through NVIDIA MPS' in run.stdout
  # By default every JPEG nvJPEG takes stays on the device.
  assert 'large draft' not in run.stdout, run.stdout
  made = calls(tmp_path)
  assert [c['args'] for c in made] == [['-d'], []]
  assert made[1]['read'].strip() == 'quit'
  assert made[0]['pipe'] == made[1]['pipe']
  assert not os.path.exists(made[0]['pipe'])  # cleaned up
  _assert_same_run(out, errors_of=gpu_out, features_of=gpu_out)


def test_a_local_gpu_refresh_shares_the_gpu_as_a_run_does(
    gpu_and_cpu_runs, tmp_path, notop_weights):
  """``featurize refresh`` launches as ``featurize run`` does: with two
  worker processes on the GPU, each starts MPS for its workers and gives
  them the same shares of the machine and of the GPU's memory, as the
  control program (started after they are set) records."""
  from tests.support.fake_mps import calls, fake_control
  from pipeline.runners.local_gpu import mps
  _, gpu_out, _, _ = gpu_and_cpu_runs
  flags = ['--direct_num_workers=2', '--direct_running_mode=multi_processing']

  def env_with_control(folder):
    folder.mkdir()
    env = on_cpu_env()
    for name in (mps.PIPE_ENV, mps.MPS_ENV, backend.GPU_PROCESSES_ENV,
                 backend.WORKER_PROCESSES_ENV, backend.MEMORY_FRACTION_ENV,
                 backend.MEMORY_FRACTION_DEFAULTED_ENV):
      env.pop(name, None)
    env['PATH'] = fake_control(folder) + os.pathsep + env['PATH']
    return env

  run = _run_again(gpu_out, str(tmp_path / 'run'), notop_weights, flags,
                   env_with_control(tmp_path / 'run-mps'))
  root = os.path.dirname(gpu_out)
  refresh = subprocess.run(
      [sys.executable, '-m', 'pipeline.cli', 'refresh', '--config',
       demo.LOCAL_CONFIG, '--input', os.path.join(root, 'input', '**'),
       '--weights', notop_weights, '--max-error-fraction', '1', '--pooling',
       'avg', '--dataset', str(tmp_path / 'dataset'), '--device', 'gpu',
       '--batch-size', '4', *flags],
      cwd=ROOT, env=env_with_control(tmp_path / 'refresh-mps'),
      capture_output=True, text=True, timeout=600)
  assert refresh.returncode == 0, refresh.stderr[-3000:]
  said = '2 worker processes share the GPU through NVIDIA MPS'
  assert said in run.stdout and said in refresh.stdout, refresh.stdout
  by_run, by_refresh = calls(tmp_path / 'run-mps'), calls(
      tmp_path / 'refresh-mps')
  assert [c['args'] for c in by_refresh] == [['-d'], []]
  assert by_refresh[1]['read'].strip() == 'quit'
  assert by_refresh[0]['env'] == by_run[0]['env'] == {
      backend.WORKER_PROCESSES_ENV: '2', backend.GPU_PROCESSES_ENV: '2',
      backend.MEMORY_FRACTION_ENV: str(backend.memory_fraction(2))}
  assert 'version v000001-' in refresh.stdout


def test_one_helper_thread_gives_what_two_give(gpu_and_cpu_runs, tmp_path,
                                              notop_weights):
  """One helper thread (``GpuSettings.prepare_threads``; the default is
  two batches decoding and resizing at once in one process): the same
  keys, error lines and features."""
  _, gpu_out, _, _ = gpu_and_cpu_runs
  assert gpu_settings.GpuSettings().prepare_threads == 2
  out = str(tmp_path / 'one-thread')
  env = on_cpu_env()
  env[gpu_settings.SETTINGS_ENV] = '{"prepare_threads": 1}'
  _run_again(gpu_out, out, notop_weights, ['--quiet'], env)
  _assert_same_run(out, errors_of=gpu_out, features_of=gpu_out)


def test_the_local_gpu_config_runs_several_processes_on_the_gpu():
  """run_configs/local-gpu.yaml: the measured layout (several SDK worker
  processes sharing the GPU) and --device gpu, from the file alone."""
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
  from pipeline import options  # pylint: disable=import-outside-toplevel
  from pipeline.run import local_worker_processes  # pylint: disable=import-outside-toplevel
  parsed = options.parse_run_args(
      ['--config', os.path.join(ROOT, 'run_configs', 'local-gpu.yaml'),
       '--input', 'x/*.tfrecord', '--output', 'out'])
  assert parsed.job.model.device == 'gpu'
  assert local_worker_processes(PipelineOptions(parsed.beam_args)) == 8


@pytest.mark.parametrize('model', ['inceptionv3', 'efficientnetb0'])
def test_other_models_give_the_cpu_paths_features(tmp_path, model):
  """The GPU path resizes to each model's own input size (299 for
  InceptionV3, with its shorter side to 342 first), preprocesses in its
  mode on the device (tf; none for EfficientNet, which rescales itself),
  and runs it on JAX: the CPU path's features, as for VGG16."""
  named = models.catalog.find(model)
  weights = write_model_weights(str(tmp_path / named.weights_file_notop),
                                model)
  ds = datasets.write_dataset(str(tmp_path / 'input'), ('files',), bad=False)
  common = ['--config', demo.LOCAL_CONFIG, '--input',
            str(tmp_path / 'input' / '**'), '--model', model, '--weights',
            weights, '--precision', 'float32', '--pooling', 'avg',
            '--batch-size', '4', '--quiet']
  gpu_out, cpu_out = str(tmp_path / 'gpu'), str(tmp_path / 'cpu')
  gpu = subprocess.run(
      [sys.executable, '-m', 'pipeline.cli', 'run', *common, '--output',
       gpu_out, '--device', 'gpu'],
      cwd=ROOT, env=on_cpu_env(), capture_output=True, text=True, timeout=900)
  assert gpu.returncode == 0, gpu.stderr
  assert f'{named.keras_name} loaded 1 time(s)' in gpu.stdout
  assert cli.main(['run', *common, '--output', cpu_out]) == 0
  got, want = read_outputs(gpu_out), read_outputs(cpu_out)
  assert sorted(got) == sorted(want) == sorted(ds.images)
  keys = sorted(want)
  got = np.stack([got[k][0] for k in keys])
  want = np.stack([want[k][0] for k in keys])
  assert got.shape[1:] == models.feature_shape(models.ModelConfig(
      model=model, pooling='avg'))
  assert cosines(got, want).min() >= 0.99
  assert np.median(cosines(got, want)) >= 0.999
