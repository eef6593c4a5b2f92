"""Shared fixtures: a VGG16 weight file in the official Keras format, and a
real GCS API server on loopback."""
import os
from typing import Callable, NamedTuple

import numpy as np
import pytest

from tests import gcs_server

BUCKET = 'featurize-test'

# tests/gpu needs an NVIDIA GPU; the README's test command leaves it out.
# benchmarks/gpu/run_on_device.sh runs it on the GPU machine.
GPU_TESTS_ENV = 'FEATURIZE_GPU_TESTS'
collect_ignore = [] if os.environ.get(GPU_TESTS_ENV) else ['gpu']


def write_official_weights(path: str, include_top: bool = False,
                           seed: int = 123) -> str:
  """Writes VGG16 weights as the official ``..._notop.h5`` files are laid
  out (Keras's legacy HDF5 weight format: one group per layer, in order).

  The real ImageNet weights cannot be downloaded here; these are random but
  loaded by exactly the same code.
  """
  import h5py
  import keras
  from keras.src.legacy.saving import legacy_h5_format
  model = keras.applications.VGG16(include_top=include_top, weights=None)
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if layer.weights:
      kernel, bias = layer.get_weights()
      scale = np.sqrt(2.0 / np.prod(kernel.shape[:-1]))
      layer.set_weights([
          (rng.standard_normal(kernel.shape) * scale).astype(np.float32),
          (rng.standard_normal(bias.shape) * 0.01).astype(np.float32)])
  with h5py.File(path, 'w') as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, model)
  return path


@pytest.fixture(scope='session')
def notop_weights(tmp_path_factory) -> str:
  """Path of ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``."""
  folder = tmp_path_factory.mktemp('weights')
  return write_official_weights(
      str(folder / 'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'))


class Gcs(NamedTuple):
  """The GCS server of the test session.

  Attributes:
    host: Its ``http://127.0.0.1:PORT``.
    bucket: A ``google.cloud.storage`` bucket in it, for the tests' own
      uploads and downloads.
    env: Environment variables that point a process at the server, with
      application-default credentials (see ``gcs_server``).
    secrets: Strings from the credentials that must never be written.
    refreshes: How many OAuth tokens the credentials fetched so far.
  """
  host: str
  bucket: object
  env: dict
  secrets: dict
  refreshes: Callable[[], int]


@pytest.fixture(scope='session')
def gcs(tmp_path_factory) -> Gcs:
  from google.auth.credentials import AnonymousCredentials
  from google.cloud import storage
  folder = str(tmp_path_factory.mktemp('gcloud'))
  with gcs_server.running_token_server(folder) as (
      credentials, secrets, refreshes), gcs_server.running_server(
          BUCKET) as host:
    client = storage.Client(credentials=AnonymousCredentials(),
                            project='featurize-test',
                            client_options={'api_endpoint': host})
    yield Gcs(host, client.bucket(BUCKET),
              gcs_server.client_environment(host, credentials), secrets,
              refreshes)


@pytest.fixture
def gcs_env(gcs, monkeypatch) -> Gcs:
  """``gcs``, with this test process pointed at it too."""
  for name, value in gcs.env.items():
    monkeypatch.setenv(name, value)
  return gcs


def pytest_configure(config):
  # Keras 3.15 converts tensors with np.array(x, copy=False) semantics that
  # numpy 2 deprecates; it is Keras's to fix and says nothing about ours.
  config.addinivalue_line(
      'filterwarnings', 'ignore:__array__ implementation:DeprecationWarning')


def pytest_addoption(parser):
  parser.addoption(
      '--fuzz-budget', type=int, default=None, metavar='N',
      help='Inputs tried by tests/test_fuzz.py (default: '
      '$FEATURIZE_FUZZ_BUDGET, else the CI budget).')
