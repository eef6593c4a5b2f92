"""A real GCS JSON-API server on loopback (``gcp-storage-emulator``)."""
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def client_environment(host: str) -> dict:
  """Environment for a process that talks to the server.

  ``NO_GCE_CHECK`` keeps google-auth from probing the GCE metadata server
  (an address off this machine) while it looks for credentials; finding
  none, Beam connects anonymously, which the server accepts.
  """
  env = dict(os.environ)
  env.update({'STORAGE_EMULATOR_HOST': host, 'NO_GCE_CHECK': 'true',
              'GOOGLE_CLOUD_PROJECT': 'featurize-test'})
  return env


@contextlib.contextmanager
def running_server(bucket: str):
  """Starts the server with ``bucket``; yields its ``http://host:port``."""
  port = _free_port()
  emulator = os.path.join(os.path.dirname(sys.executable),
                          'gcp-storage-emulator')
  process = subprocess.Popen(
      [emulator, 'start', '--host', '127.0.0.1', '--port', str(port),
       '--in-memory', '--default-bucket', bucket],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  host = f'http://127.0.0.1:{port}'
  try:
    for _ in range(100):
      try:
        urllib.request.urlopen(f'{host}/storage/v1/b/{bucket}', timeout=1)
        break
      except OSError:
        if process.poll() is not None:
          raise RuntimeError('gcp-storage-emulator exited at start')
        time.sleep(0.1)
    else:
      raise RuntimeError('gcp-storage-emulator did not start')
    yield host
  finally:
    process.terminate()
    process.wait(timeout=10)
