"""One refresh of a dataset at a time: a lock object created atomically.

``ROOT/.lock`` names the refresh that holds it (its version, host, PID and
start time). It is created with an exclusive create on local disk, and on
GCS with ``if_generation_match=0`` (the write succeeds only where no object
exists). The refresh's last step deletes it after the pointer is replaced;
one that was killed leaves it, and a later refresh takes it over once it
is older than the timeout, or at once with ``--break-lock``.
"""
import datetime
import json
import os
import socket
from typing import Optional, Tuple

from pipeline.refresh import versions

LOCK = '.lock'
DEFAULT_TIMEOUT_S = 6 * 3600


class Locked(Exception):
  """Another refresh holds the dataset's lock."""


def _now() -> datetime.datetime:
  return datetime.datetime.now(datetime.timezone.utc)


def describe_holder(holder: dict) -> str:
  return (f'refresh {holder.get("refresh")} (host {holder.get("host")}, pid '
          f'{holder.get("pid")}, since {holder.get("started_at")})')


def _read(target: str) -> Tuple[Optional[dict], Optional[int]]:
  """The lock's content and GCS generation, or (None, None)."""
  if target.startswith('gs://'):
    blob = versions.gcs_blob(target)
    if not blob.exists():
      return None, None
    blob.reload()
    generation = blob.generation  # The download may reset it.
    return json.loads(blob.download_as_bytes(
        if_generation_match=generation)), generation
  try:
    with open(target) as f:
      return json.load(f), None
  except FileNotFoundError:
    return None, None


def _create(target: str, data: bytes, generation: Optional[int]) -> bool:
  """Creates the lock if it is absent (or still the ``generation`` read,
  on GCS, when taking it over); returns whether it did."""
  if target.startswith('gs://'):
    from google.api_core import exceptions
    try:
      versions.gcs_blob(target).upload_from_string(
          data, content_type='application/json',
          if_generation_match=generation or 0)
      return True
    except exceptions.PreconditionFailed:
      return False
  os.makedirs(os.path.dirname(target), exist_ok=True)
  try:
    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, 'wb') as f:
    f.write(data)
  return True


def _remove_stale(target: str, holder: dict) -> None:
  """Moves a stale local lock aside, so that exactly one taker's
  exclusive create then succeeds."""
  aside = f'{target}.stale-{holder.get("refresh")}-{os.getpid()}'
  try:
    os.rename(target, aside)
    os.remove(aside)
  except FileNotFoundError:
    pass


def acquire(root: str, refresh: str, timeout_s: float = DEFAULT_TIMEOUT_S,
            break_lock: bool = False) -> dict:
  """Takes the dataset's lock for ``refresh``; returns what it wrote.

  Raises:
    Locked: another refresh holds it, and it is neither older than
      ``timeout_s`` nor broken with ``break_lock``.
  """
  target = versions.path(root, LOCK)
  mine = {'refresh': refresh, 'host': socket.gethostname(),
          'pid': os.getpid(),
          'started_at': _now().isoformat(timespec='seconds')}
  data = json.dumps(mine).encode()
  if _create(target, data, None):
    return mine
  holder, generation = _read(target)
  if holder is None:  # Released between the two calls: try once more.
    if _create(target, data, None):
      return mine
    holder, generation = _read(target)
  started = datetime.datetime.fromisoformat(holder.get('started_at',
                                                       '1970-01-01T00:00:00+00:00'))
  age = (_now() - started).total_seconds()
  if not break_lock and age < timeout_s:
    raise Locked(
        f'{root} is being refreshed by {describe_holder(holder)}; its lock '
        f'{target} is taken over after {timeout_s / 3600:g} h, or now with '
        '--break-lock if that refresh is dead')
  if not target.startswith('gs://'):
    _remove_stale(target, holder)
  if not _create(target, data, generation):
    now_holder, _ = _read(target)
    raise Locked(f'{root}: another refresh took the stale lock first: '
                 f'{describe_holder(now_holder or {})}')
  return mine


def release(root: str, refresh: str) -> None:
  """Deletes the lock if ``refresh`` holds it."""
  target = versions.path(root, LOCK)
  holder, generation = _read(target)
  if not holder or holder.get('refresh') != refresh:
    return
  if target.startswith('gs://'):
    from google.api_core import exceptions
    try:
      versions.gcs_blob(target).delete(if_generation_match=generation)
    except (exceptions.NotFound, exceptions.PreconditionFailed):
      pass
  else:
    try:
      os.remove(target)
    except FileNotFoundError:
      pass
