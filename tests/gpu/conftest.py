"""Fixtures of the GPU tests (run on the GPU machine only, see
``benchmarks/gpu/run_on_device.sh``): Keras on JAX, the CPU path's
reference outputs carried from a TensorFlow machine, the same seeded
weight file written here."""
import os

import numpy as np
import pytest

from transforms.extract import backend

backend.select('gpu')  # before anything loads Keras

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
REFERENCE = os.environ.get('FEATURIZE_GPU_REFERENCE',
                           os.path.join(ROOT, '.gpu-ref', 'reference.npz'))


@pytest.fixture(scope='session')
def reference():
  """What ``python -m tests.gpu.reference`` wrote on the CPU machine."""
  from tests.gpu import reference as made  # pylint: disable=import-outside-toplevel
  loaded = np.load(REFERENCE)
  out = {key: loaded[key] for key in loaded.files}
  out['jpegs'] = dict(zip(
      [str(n) for n in out['names']],
      made.unpack(out['jpeg_data'], out['jpeg_offsets'])))
  return out


@pytest.fixture(scope='session')
def gpu_weights(tmp_path_factory, reference):
  """The tests' seeded official-format weight file, written here; its
  values must be those the reference was computed with."""
  # pylint: disable=import-outside-toplevel
  from tests.support.weights import write_official_weights
  from tests.gpu.reference import weights_digest
  from transforms.extract import models
  name = models.NAMED_MODELS['vgg16'].weights_file_notop
  path = write_official_weights(str(tmp_path_factory.mktemp('weights') / name))
  assert weights_digest(path) == str(reference['weights_digest'])
  return path
