"""Shared fixtures (a VGG16 weight file in the official Keras format, a
real GCS API server on loopback) and the tests' layout by kind:

* ``unit/``: functions and transforms on their own, mirroring the
  packages (``unit/read``, ``unit/extract/gpu``, ``unit/pipeline``...);
* ``system/``: runs of the whole program (a pipeline on the DirectRunner,
  a Flink cluster, Airflow, a GCS server, an installed sdist), marked
  ``system``;
* ``support/``: what both share (datasets, images, servers, clusters);
* ``gpu/``: the GPU machine's tests, collected there only.

``pytest -m "not system" tests`` is the fast loop.
"""
import os
from typing import Callable, NamedTuple

import pytest

from tests.support import gcs_server
from tests.support.gcs_server import BUCKET
from tests.support.weights import write_official_weights


# tests/gpu needs an NVIDIA GPU; the README's test command leaves it out.
# benchmarks/gpu/run_on_device.sh runs it on the GPU machine.
GPU_TESTS_ENV = 'FEATURIZE_GPU_TESTS'
collect_ignore = [] if os.environ.get(GPU_TESTS_ENV) else ['gpu']
SYSTEM_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            'system')


def pytest_configure(config):
  config.addinivalue_line(
      'markers', 'system: runs the whole program (a pipeline, a cluster, a '
      'server or an install); -m "not system" leaves them out')
  # Keras 3.15 converts tensors with np.array(x, copy=False) semantics that
  # numpy 2 deprecates; it is Keras's to fix and says nothing about ours.
  config.addinivalue_line(
      'filterwarnings', 'ignore:__array__ implementation:DeprecationWarning')


def pytest_collection_modifyitems(items):
  """Everything under ``system/`` is a system test."""
  for item in items:
    if str(item.path).startswith(SYSTEM_TESTS + os.sep):
      item.add_marker(pytest.mark.system)


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


def pytest_addoption(parser):
  parser.addoption(
      '--fuzz-budget', type=int, default=None, metavar='N',
      help='Inputs tried by tests/system/test_fuzz.py (default: '
      '$FEATURIZE_FUZZ_BUDGET, else the CI budget).')
