"""A real GCS JSON-API server on loopback (``gcp-storage-emulator``), and
the OAuth token endpoint that its clients' credentials refresh against."""
import contextlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

# Secrets of the test credentials: none may ever show up in outputs or logs.
# The service-account key is made anew for each session (running_token_server).
SECRETS = {
    'private_key_id': 'featurize-test-key-id-6d1f0b91c2aa',
    'access_token': 'featurize-test-access-token-3e77c4',
}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def client_environment(host: str, credentials: str) -> dict:
  """Environment variables for a process that talks to the server.

  ``credentials`` is an application-default credentials file (see
  ``running_token_server``): Beam finds it as it finds a user's, and the
  storage client sends its access token with every request. ``NO_GCE_CHECK``
  keeps google-auth from probing the GCE metadata server, an address off
  this machine.
  """
  return {'STORAGE_EMULATOR_HOST': host, 'NO_GCE_CHECK': 'true',
          'GOOGLE_CLOUD_PROJECT': 'featurize-test',
          'GOOGLE_APPLICATION_CREDENTIALS': credentials}


class _TokenHandler(http.server.BaseHTTPRequestHandler):
  """OAuth 2 token endpoint: every request gets the same access token."""
  refreshes = 0

  def do_POST(self):  # pylint: disable=invalid-name
    self.rfile.read(int(self.headers.get('Content-Length', 0)))
    type(self).refreshes += 1
    body = json.dumps({'access_token': SECRETS['access_token'],
                       'expires_in': 3600, 'token_type': 'Bearer'}).encode()
    self.send_response(200)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def log_message(self, *args):  # keep pytest's output clean
    pass


def _private_key_pem() -> str:
  # cryptography comes with apache-beam and google-auth.
  from cryptography.hazmat.primitives import serialization
  from cryptography.hazmat.primitives.asymmetric import rsa
  key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
  return key.private_bytes(
      serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
      serialization.NoEncryption()).decode()


@contextlib.contextmanager
def running_token_server(folder: str):
  """Serves OAuth token requests on loopback.

  Yields the path of a service-account key file (what CI systems and
  schedulers use as application-default credentials) whose ``token_uri``
  points at this server, the secrets in it, and a function that returns
  how many token requests the server has answered.
  """
  handler = type('Handler', (_TokenHandler,), {'refreshes': 0})
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  pem = _private_key_pem()
  secrets = {**SECRETS,
             # A line from the middle of the key: never in any output.
             'private_key': pem.splitlines()[5]}
  path = os.path.join(folder, 'service-account.json')
  with open(path, 'w') as f:
    json.dump({'type': 'service_account', 'project_id': 'featurize-test',
               'private_key_id': SECRETS['private_key_id'],
               'private_key': pem,
               'client_email': 'featurize@featurize-test.iam.gserviceaccount.com',
               'client_id': '1', 'token_uri':
                   f'http://127.0.0.1:{server.server_port}/token'}, f)
  try:
    yield path, secrets, lambda: handler.refreshes
  finally:
    server.shutdown()
    server.server_close()


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
