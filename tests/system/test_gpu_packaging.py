"""The GPU worker image, the gpu extra and the Dataflow GPU job, checked
without a GPU or Docker: the image against setup.py, the job built
offline by Beam's DataflowRunner (``--dry_run``)."""
import os
import re
import subprocess
import sys

import pytest
import yaml
from apache_beam.options.pipeline_options import (DebugOptions,
                                                  GoogleCloudOptions)

from pipeline import options, run
from tests.support import image_zoo
from tests.support.gcs_server import BUCKET
from tests.support.paths import ROOT
from transforms.extract import backend


CONFIG = os.path.join('run_configs', 'dataflow-gpu.yaml')


def _read(name: str) -> str:
  with open(os.path.join(ROOT, name)) as f:
    return f.read()


def test_gpu_image_installs_the_gpu_extra_on_the_pinned_beam():
  dockerfile = _read('Dockerfile.gpu')
  setup = _read('setup.py')
  beam_pin = re.search(r"'apache-beam\[gcp\]==([\d.]+)'", setup).group(1)
  assert f'ARG BEAM_VERSION={beam_pin}\n' in dockerfile
  python = re.search(r'ARG PYTHON_VERSION=(3\.\d+)', dockerfile).group(1)
  low, high = re.search(r"python_requires='>=(3\.\d+),<(3\.\d+)'",
                        setup).groups()
  assert int(low[2:]) <= int(python[2:]) < int(high[2:])
  # The CPU image's base and entry point: one Beam SDK image, two extras.
  cpu_image = _read('Dockerfile')

  def line(pattern, text):
    return re.search(pattern, text, re.M).group(0)

  for pattern in (r'^FROM apache/beam_python.*$', r'^ENTRYPOINT .*$'):
    assert line(pattern, dockerfile) == line(pattern, cpu_image)
  # It installs an extra that setup.py defines, and pins Keras to the
  # backend featurize picks for --device gpu.
  extra = re.search(r"pip install --no-cache-dir '\.\[(\w+)\]' && pip check",
                    dockerfile).group(1)
  assert extra == 'gpu' and _extra('GPU_REQUIRES')
  keras_backend = re.search(r'KERAS_BACKEND=(\w+)', dockerfile).group(1)
  assert keras_backend == backend.BACKENDS['gpu']
  ignore = [i.rstrip('/') for i in _read('.dockerignore').split()]
  for line in re.findall(r'^COPY (?!--from)(.+)$', dockerfile, re.M):
    *sources, _ = line.split()
    for source in sources:
      assert os.path.exists(os.path.join(ROOT, source)), source
      assert f'!{source.rstrip("/")}' in ignore


def _extra(name: str):
  namespace = {}
  source = _read('setup.py').split('setuptools.setup(')[0]
  exec(source.replace('import setuptools', ''), namespace)  # pylint: disable=exec-used
  return namespace[name]


def test_gpu_and_test_extras_pin_the_same_jax_per_python():
  def jax_pins(requirements):
    return {re.search(r'python_version ([<>=]+ "3\.\d+")', r).group(1):
            re.search(r'==([\d.]+)', r).group(1)
            for r in requirements if r.startswith('jax[')}
  gpu = jax_pins(_extra('GPU_REQUIRES'))
  test = jax_pins(_extra('TEST_REQUIRES'))
  assert gpu == test == {'< "3.12"': '0.10.2', '>= "3.12"': '0.11.2'}
  assert any(r.startswith('jax[cuda13]') for r in _extra('GPU_REQUIRES'))
  assert {'torch==2.11.0', 'torchvision==0.26.0'} <= set(_extra('GPU_REQUIRES'))


@pytest.fixture
def gpu_job(gcs_env, monkeypatch):
  for name in ('a.jpg', 'b.jpg'):
    gcs_env.bucket.blob(f'dataflow-gpu-input/{name}').upload_from_string(
        image_zoo.jpeg())
  monkeypatch.chdir(ROOT)
  parsed = options.parse_run_args([
      '--input', f'gs://{BUCKET}/dataflow-gpu-input/*.jpg', '--output',
      f'gs://{BUCKET}/dataflow-gpu-out', '--weights', 'random', '--config',
      CONFIG, '--dry_run=True'])
  return parsed, run.start_job(parsed.job, parsed.beam_args).job


def test_dataflow_gpu_job_runs_extract_on_device_with_one_process(gpu_job):
  parsed, job = gpu_job
  with open(os.path.join(ROOT, CONFIG)) as f:
    config = yaml.safe_load(f)
  assert parsed.job.model.device == 'gpu'
  assert parsed.job.model.batch_size == config['featurize']['batch_size']
  names = {t.unique_name for t in job.proto_pipeline.components.transforms
           .values()}
  # The one extract step, on the device: no CPU decode, no RunInference.
  assert 'ExtractFeatures/ExtractOnDevice' in names
  assert not any(n.startswith('ExtractFeatures/DecodeImages') or
                 'RunInference' in n for n in names)
  debug = job.options.view_as(DebugOptions)
  assert 'no_use_multiple_sdk_containers' in debug.experiments
  service = job.options.view_as(GoogleCloudOptions).dataflow_service_options
  assert any(o.startswith('worker_accelerator=type:nvidia-l4;count:1;'
                          'install-nvidia-driver') for o in service)


def test_the_cpu_path_imports_without_jax_or_torch():
  """A plain install has neither: the pipeline's graph names the GPU
  path's modules, which must import theirs only when they run."""
  code = '''
import sys
class Block:
  def find_spec(self, name, path, target=None):
    if name.split('.')[0] in ('jax', 'jaxlib', 'torch', 'torchvision'):
      raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
import pipeline.build, pipeline.cli, transforms.extract.gpu.on_device
from transforms.decode import imaging
from transforms.extract.gpu import routing
print(routing.route(b'not an image', imaging.DecodeConfig()).category)
'''
  done = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                        capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == 'not_jpeg'
