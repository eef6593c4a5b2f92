"""Weight and model files: checked once at launch, copied once per worker
machine.

A weight file (``--weights``: a path or ``gs://`` URL) or a model file
(``--model FILE.keras``) is read once by the launcher for its size and
sha256; every worker copies it once per machine and checks the copy
against both, so that a run names exactly what it used and a changed file
is refused rather than mixed in.
"""
import fcntl
import hashlib
import os
import shutil
import tempfile
from typing import NamedTuple, Optional, Tuple

from transforms.extract.models.model_config import ModelConfig

# The first bytes of every HDF5 file (Keras's .h5 weight files) and of
# every zip archive (Keras's .keras model files).
HDF5_SIGNATURE = b'\x89HDF\r\n\x1a\n'
ZIP_SIGNATURE = b'PK\x03\x04'


class Expected(NamedTuple):
  """What the launcher read of a file, for every copy to match.

  Attributes:
    source: The file's path or URL.
    sha256: Its sha256, or None where the launcher did not read it.
    size: Its size in bytes, or None likewise.
    what: What it is, for messages (``weight file``, ``model file``).
  """
  source: str
  sha256: Optional[str]
  size: Optional[int]
  what: str = 'weight file'


def sha256_of(path: str) -> str:
  """sha256 of a file on any Beam filesystem, read in chunks."""
  return inspect_file(path)[0]


def inspect_file(path: str, signature: bytes = b'',
                 what: str = 'weight file',
                 kind: str = '') -> Tuple[str, int]:
  """Reads a file once, on any Beam filesystem.

  Args:
    signature: The bytes it must start with (none checked if empty).
    what: What it is, for messages.
    kind: What a file without the signature is not, for messages.

  Returns:
    Its sha256 and its size in bytes.

  Raises:
    FileNotFoundError: there is no such file.
    ValueError: it cannot be read (the reason is in the message), or it
      does not start with ``signature``.
  """
  from apache_beam.io.filesystems import CompressionTypes, FileSystems
  if not FileSystems.exists(path):
    raise FileNotFoundError(f'{what} not found: {path}')
  digest, size, head = hashlib.sha256(), 0, b''
  try:
    with FileSystems.open(
        path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      for chunk in iter(lambda: f.read(8 * 1024 * 1024), b''):
        if not size:
          head = chunk[:len(signature)]
        digest.update(chunk)
        size += len(chunk)
  except Exception as e:  # pylint: disable=broad-except
    # Any filesystem's failure (permission, network, ...) becomes one clear
    # error before a single image is read.
    raise ValueError(f'cannot read {what} {path}: '
                     f'{type(e).__name__}: {e}') from e
  if signature and head != signature:
    raise ValueError(f'{path} is not {kind}')
  return digest.hexdigest(), size


def inspect_weight_file(path: str,
                        check_format: bool = True) -> Tuple[str, int]:
  """``inspect_file`` for a Keras ``.h5`` weight file (its HDF5 signature
  checked with ``check_format``)."""
  return inspect_file(path, HDF5_SIGNATURE if check_format else b'',
                      kind='a Keras .h5 weight file (no HDF5 signature)')


def _matches(path: str, expected: Expected) -> bool:
  """Whether a local file has the size and sha256 the launcher recorded."""
  if expected.size is not None and os.path.getsize(path) != expected.size:
    return False
  return not expected.sha256 or sha256_of(path) == expected.sha256


def local_copy(expected: Expected, cache_dir: str) -> str:
  """Returns a local path of a file, copying it once if remote.

  The copy lands in ``cache_dir`` under its sha256 (or name) and is
  renamed into place only when complete. An exclusive lock on the cache
  folder makes the worker processes of one machine (one per vCPU on
  Dataflow) wait for a single download instead of each fetching hundreds
  of MB; later loads reuse the copy after checking its size and sha256.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: the file or its copy does not match what the launcher
      recorded.
  """
  from apache_beam.io.filesystems import CompressionTypes, FileSystems
  source = expected.source
  if '://' not in source:
    if not os.path.isfile(source):
      raise FileNotFoundError(f'{expected.what} not found: {source}')
    if not _matches(source, expected):
      raise ValueError(f'{expected.what} {source} changed since the launch '
                       '(size or sha256 mismatch)')
    return source
  name = os.path.basename(source)
  folder = os.path.join(cache_dir, expected.sha256 or 'unverified')
  target = os.path.join(folder, name)
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, '.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if os.path.isfile(target) and _matches(target, expected):
      return target
    if not FileSystems.exists(source):
      raise FileNotFoundError(f'{expected.what} not found: {source}')
    handle, partial = tempfile.mkstemp(dir=folder, suffix='.partial')
    try:
      with os.fdopen(handle, 'wb') as out, FileSystems.open(
          source, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        shutil.copyfileobj(f, out, 8 * 1024 * 1024)
      if not _matches(partial, expected):
        raise ValueError(f'copy of {source} does not match the size and '
                         f'sha256 the launcher recorded '
                         f'({expected.sha256})')
      os.replace(partial, target)
    finally:
      if os.path.exists(partial):  # a failed or refused copy
        os.remove(partial)
  return target


def local_weights_copy(config: ModelConfig) -> str:
  """``local_copy`` of the configuration's weight file."""
  return local_copy(Expected(config.weights, config.weights_sha256,
                             config.weights_size), config.weights_cache_dir)


def keras_cache_path(file_name: str) -> str:
  """Where Keras keeps a downloaded application weight file."""
  root = os.environ.get('KERAS_HOME',
                        os.path.join(os.path.expanduser('~'), '.keras'))
  return os.path.join(root, 'models', file_name)
