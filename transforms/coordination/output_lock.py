"""One job at a time per output: a lock object created atomically.

``OUT/.lock`` (a run's output folder, or a dataset root for a refresh)
names the job that holds it: its kind and id, host, PID and start time. It
is created with an exclusive create on local disk, and on GCS with
``if_generation_match=0`` (the write succeeds only where no object
exists). The job's last step deletes it once its output is published; a
launcher that sees its job fail deletes it too.

A lock whose job was killed stays behind. It is taken over

* at once when the holder ran its job inside its own process tree on this
  host (a local runner, awaited) and that process is gone: the PID and the
  kernel's start time of the process tell, so a reused PID is not taken
  for the holder;
* once it is older than the timeout, where that cannot be known (the job
  runs on Dataflow or Flink, or the launcher did not wait for it);
* at once with ``break_lock``.
"""
import datetime
import json
import os
import socket
from typing import Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from transforms.coordination import gcs_objects

LOCK = '.lock'
DEFAULT_TIMEOUT_S = 6 * 3600
VERBS = {'run': 'written', 'refresh': 'refreshed'}


class Locked(Exception):
  """Another job holds the output's lock."""


def _now() -> datetime.datetime:
  return datetime.datetime.now(datetime.timezone.utc)


def _start_ticks(pid: int) -> Optional[int]:
  """When the process started, in clock ticks since boot, or None if it
  does not exist (or is a zombie)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      fields = f.read().rsplit(')', 1)[1].split()
  except (OSError, IndexError):
    return None
  return None if fields[0] == 'Z' else int(fields[19])  # field 22


def describe_holder(holder: dict) -> str:
  return (f'{holder.get("job", "job")} {holder.get("holder")} (host '
          f'{holder.get("host")}, pid {holder.get("pid")}, since '
          f'{holder.get("started_at")})')


def holder_is_gone(holder: dict) -> bool:
  """Whether the holder's process is known to have ended.

  Only a holder that watches its job in its own process tree on this host
  (``watch``) can be known dead; for others this says False.
  """
  if not holder.get('watch') or holder.get('host') != socket.gethostname():
    return False
  pid = holder.get('pid')
  return pid is None or _start_ticks(pid) != holder.get('pid_start')


def lock_path(root: str) -> str:
  return FileSystems.join(root.rstrip('/'), LOCK)


def _unreadable(written_at: Optional[datetime.datetime]) -> dict:
  """The holder of a lock that is not JSON (a job killed between creating
  and writing it): unknown, as old as the file."""
  started = written_at or _now()
  return {'job': 'job', 'holder': '(an unreadable lock)',
          'started_at': started.isoformat(timespec='seconds')}


def read(target: str) -> Tuple[Optional[dict], Optional[int]]:
  """The lock's content and GCS generation, or (None, None)."""
  if target.startswith('gs://'):
    blob = gcs_objects.blob(target)
    if not blob.exists():
      return None, None
    blob.reload()
    generation = blob.generation  # The download may reset it.
    data = blob.download_as_bytes(if_generation_match=generation)
    try:
      return json.loads(data), generation
    except ValueError:
      return _unreadable(blob.updated), generation
  try:
    with open(target) as f:
      text = f.read()
    written_at = datetime.datetime.fromtimestamp(os.path.getmtime(target),
                                                 datetime.timezone.utc)
  except FileNotFoundError:
    return None, None
  try:
    return json.loads(text), None
  except ValueError:
    return _unreadable(written_at), None


def create(target: str, data: bytes, generation: Optional[int]) -> bool:
  """Creates the lock if it is absent (or still the ``generation`` read,
  on GCS, when taking it over); returns whether it did."""
  if target.startswith('gs://'):
    from google.api_core import exceptions
    try:
      gcs_objects.blob(target).upload_from_string(
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


def _remove_stale(target: str, holder: dict) -> bool:
  """Moves the stale local lock of ``holder`` aside, so that exactly one
  taker's exclusive create then succeeds; False where the lock there is
  no longer that holder's (another taker's own, which is put back)."""
  aside = f'{target}.stale-{os.getpid()}'
  try:
    os.rename(target, aside)
  except FileNotFoundError:
    return True  # gone already: the exclusive create decides
  moved, _ = read(aside)
  if moved is not None and moved.get('holder') != holder.get('holder'):
    # Another taker moved the stale lock first and made its own: put that
    # back (the link fails where yet another lock is there now).
    try:
      os.link(aside, target)
    except FileExistsError:
      pass
    os.remove(aside)
    return False
  os.remove(aside)
  return True


def acquire(root: str, holder_id: str, timeout_s: float = DEFAULT_TIMEOUT_S,
            break_lock: bool = False, job: str = 'refresh',
            watch: bool = False) -> dict:
  """Takes the lock of ``root`` for the job ``holder_id``; returns what it
  wrote.

  Args:
    root: The output folder or dataset root.
    holder_id: The job's id, unique per launch.
    timeout_s: Age after which another job's lock counts as stale.
    break_lock: Take the lock over whatever its age.
    job: ``run`` or ``refresh``, for messages.
    watch: This process awaits a job that runs in its own process tree,
      so that a later job may take the lock over as soon as this process
      is gone.

  Raises:
    Locked: another job holds it, and it is neither stale nor broken.
  """
  target = lock_path(root)
  mine = {'job': job, 'holder': holder_id, 'host': socket.gethostname(),
          'pid': os.getpid(), 'pid_start': _start_ticks(os.getpid()),
          'watch': watch,
          'started_at': _now().isoformat(timespec='seconds')}
  data = json.dumps(mine).encode()
  if create(target, data, None):
    return mine
  holder, generation = read(target)
  if holder is None:  # Released between the two calls: try once more.
    if create(target, data, None):
      return mine
    holder, generation = read(target)
    if holder is None:  # Taken and released again while we looked.
      raise Locked(f'{root}: its lock {target} changed hands while being '
                   'read; try again')
  started = datetime.datetime.fromisoformat(
      holder.get('started_at', '1970-01-01T00:00:00+00:00'))
  age = (_now() - started).total_seconds()
  if not (break_lock or age >= timeout_s or holder_is_gone(holder)):
    raise Locked(
        f'{root} is being {VERBS.get(holder.get("job", ""), "written")} by '
        f'{describe_holder(holder)}; its lock {target} is taken over after '
        f'{timeout_s / 3600:g} h, or now with --break-lock if that job is '
        'dead')
  if not target.startswith('gs://') and not _remove_stale(target, holder):
    now_holder, _ = read(target)
    raise Locked(f'{root}: another job took the stale lock first: '
                 f'{describe_holder(now_holder or {})}')
  if not create(target, data, generation):
    now_holder, _ = read(target)
    raise Locked(f'{root}: another job took the stale lock first: '
                 f'{describe_holder(now_holder or {})}')
  return mine


def release(root: str, holder_id: str) -> None:
  """Deletes the lock if ``holder_id`` holds it."""
  target = lock_path(root)
  holder, generation = read(target)
  if not holder or holder.get('holder') != holder_id:
    return
  if target.startswith('gs://'):
    from google.api_core import exceptions
    try:
      gcs_objects.blob(target).delete(if_generation_match=generation)
    except (exceptions.NotFound, exceptions.PreconditionFailed):
      pass
  else:
    try:
      os.remove(target)
    except FileNotFoundError:
      pass
