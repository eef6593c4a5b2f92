"""A real GCS JSON-API server on loopback (``fake-gcs-server``), and the
OAuth token endpoint that its clients' credentials refresh against.

fake-gcs-server enforces generation preconditions on writes
(``ifGenerationMatch``, 412 when they fail), which the dataset pointer and
the refresh lock depend on; the Python emulator used before ignored them.
It is a Go program, built once from the Go module proxy and cached
(``server_binary``).
"""
import contextlib
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from typing import Optional, Sequence

from tests.support.ports import free_port

# Secrets of the test credentials: none may ever show up in outputs or logs.
# The service-account key is made anew for each session (running_token_server).
SECRETS = {
    'private_key_id': 'featurize-test-key-id-6d1f0b91c2aa',
    'access_token': 'featurize-test-access-token-3e77c4',
}


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
               'client_email':
                   'featurize@featurize-test.iam.gserviceaccount.com',
               'client_id': '1', 'token_uri':
                   f'http://127.0.0.1:{server.server_port}/token'}, f)
  try:
    yield path, secrets, lambda: handler.refreshes
  finally:
    server.shutdown()
    server.server_close()


# The fake-gcs-server release the tests run against; ``go mod download``
# takes it from the Go module proxy (a registry these machines reach). The
# cache folder names the patch below too, so that a changed patch rebuilds.
FAKE_GCS_SERVER = 'github.com/fsouza/fake-gcs-server@v1.56.1'
CACHE = os.path.join(os.path.expanduser('~'), '.cache', 'featurize',
                     'fake-gcs-server',
                     FAKE_GCS_SERVER.rsplit('@', 1)[1] + '-batch-ids')


# fake-gcs-server skips the parts of a batch request that carry no
# Content-ID header, and google-cloud-storage sends none (real GCS answers
# them all), so Beam's batched deletes and copies would silently do
# nothing. The build gives such parts their index as ID; the rest of the
# server is as released.
_BATCH_SKIP = """\t\tif contentID == "" {
\t\t\t// missing content ID, skip
\t\t\tcontinue
\t\t}
"""
_BATCH_INDEX = """\t\tif contentID == "" {
\t\t\tcontentID = fmt.Sprintf("<%d>", partIndex)
\t\t}
\t\tpartIndex++
"""
_BATCH_LOOP = '\tpart, err := reader.NextPart()\n'


def _go(go: str, args: Sequence[str], cwd: Optional[str] = None,
        **env: str) -> str:
  result = subprocess.run([go, *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **env})
  if result.returncode:
    raise RuntimeError(f'go {" ".join(args)} failed:\n'
                       f'{result.stderr[-3000:]}')
  return result.stdout


def server_binary() -> str:
  """The path of the fake-gcs-server binary, built on first use.

  ``FEATURIZE_FAKE_GCS_SERVER`` names a binary built elsewhere (with the
  batch fix above).
  """
  given = os.environ.get('FEATURIZE_FAKE_GCS_SERVER')
  if given:
    return given
  binary = os.path.join(CACHE, 'fake-gcs-server')
  if os.path.isfile(binary):
    return binary
  go = shutil.which('go')
  if not go:
    raise RuntimeError('the GCS tests need Go (1.26 or newer) to build '
                       f'{FAKE_GCS_SERVER}; none is on PATH')
  module = json.loads(_go(go, ['mod', 'download', '-json', FAKE_GCS_SERVER]))
  building = f'{CACHE}.building'
  shutil.rmtree(building, ignore_errors=True)
  source = os.path.join(building, 'source')
  # The module cache is read-only: patch a copy.
  shutil.copytree(module['Dir'], source)
  for folder, _, files in os.walk(source):
    for name in files + ['.']:
      os.chmod(os.path.join(folder, name), 0o755)
  server_go = os.path.join(source, 'fakestorage', 'server.go')
  with open(server_go) as f:
    code = f.read()
  if code.count(_BATCH_SKIP) != 1 or code.count(_BATCH_LOOP) != 1:
    raise RuntimeError(f'{FAKE_GCS_SERVER}: the batch handler changed; '
                       'update the patch in tests/support/gcs_server.py')
  code = code.replace(_BATCH_SKIP, _BATCH_INDEX).replace(
      _BATCH_LOOP, '\tpartIndex := 0\n' + _BATCH_LOOP)
  with open(server_go, 'w') as f:
    f.write(code)
  _go(go, ['build', '-o', os.path.join(building, 'fake-gcs-server'), '.'],
      cwd=source, CGO_ENABLED='0', GOFLAGS='-mod=mod')
  shutil.rmtree(source)
  # A rename, so that a build cut short never looks like a binary.
  os.makedirs(os.path.dirname(CACHE), exist_ok=True)
  shutil.rmtree(CACHE, ignore_errors=True)
  os.rename(building, CACHE)
  return binary


@contextlib.contextmanager
def running_server(bucket: str):
  """Starts the server with an empty ``bucket``; yields its
  ``http://host:port``."""
  port = free_port()
  process = subprocess.Popen(
      [server_binary(), '-scheme', 'http', '-host', '127.0.0.1', '-port',
       str(port), '-backend', 'memory', '-log-level', 'error'],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  host = f'http://127.0.0.1:{port}'
  try:
    for _ in range(100):
      try:
        urllib.request.urlopen(f'{host}/storage/v1/b', timeout=1)
        break
      except OSError:
        if process.poll() is not None:
          raise RuntimeError('fake-gcs-server exited at start') from None
        time.sleep(0.1)
    else:
      raise RuntimeError('fake-gcs-server did not start')
    request = urllib.request.Request(
        f'{host}/storage/v1/b?project=featurize-test', method='POST',
        data=json.dumps({'name': bucket}).encode(),
        headers={'Content-Type': 'application/json'})
    urllib.request.urlopen(request, timeout=10).close()
    yield host
  finally:
    process.terminate()
    process.wait(timeout=10)


# The bucket every test session makes in its server.
BUCKET = 'featurize-test'
