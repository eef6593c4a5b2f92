"""Keras and its backend imported without their start-up chatter.

TensorFlow's C++ libraries print lines (oneDNN, CPU features, absl's
notice) to file descriptor 2 while they load, before any setting can
silence them. ``import_quietly`` holds that output back and replays it if
the import fails. The launcher calls it (``pipeline/console.py``), and so
does each worker process before it builds VGG16, unless
``FEATURIZE_VERBOSE`` is set (``--verbose``; worker processes inherit it).
"""
import contextlib
import importlib
import os
import sys
import tempfile

from transforms.extract import backend

VERBOSE_ENV = 'FEATURIZE_VERBOSE'


@contextlib.contextmanager
def stderr_captured():
  """Sends file descriptor 2 to a temporary file; replays it if the block
  fails, so that nothing useful is lost."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    except BaseException:
      os.dup2(saved, 2)
      captured.seek(0)
      sys.stderr.write(captured.read().decode(errors='replace'))
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def import_quietly(device: str = 'cpu') -> None:
  """Imports Keras on ``device``'s backend (``gpu/backend.py``: TensorFlow
  for ``cpu``, JAX for ``gpu``), quietly unless ``FEATURIZE_VERBOSE``.

  Cheap once they are imported.

  Raises:
    RuntimeError: Keras is already loaded on the other backend.
  """
  backend_name = backend.select(device)
  if 'keras' in sys.modules and backend_name in sys.modules:
    return
  if os.environ.get(VERBOSE_ENV):
    importlib.import_module('keras')
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  with stderr_captured():
    importlib.import_module('keras')
    importlib.import_module(backend_name)


def keras_ready(device: str = 'cpu') -> None:
  """Keras imported: on ``device``'s backend unless this process already
  runs Keras (a test, a worker). For what is the same on every backend:
  reading a model's graph and shapes."""
  if 'keras' not in sys.modules:
    import_quietly(device)
