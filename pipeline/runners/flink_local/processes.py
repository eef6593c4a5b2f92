"""Background services: start, recognise and stop exactly what we started.

Each service runs in a session (process group) of its own, with its output
in ``logs/<name>.out`` and a PID record in ``pids/<name>.json``. A record
holds the process's start time as the kernel counts it, so a PID that was
reused by some other process after ours ended is never taken for ours, and
never signalled.
"""
import dataclasses
import json
import os
import signal
import subprocess
import time
from typing import Dict, List, Optional, Sequence


@dataclasses.dataclass(frozen=True)
class Service:
  """A process to run in the background.

  Attributes:
    name: Short name (``tm-1``); names its log and PID files.
    argv: Command line.
    env: Variables set on top of this process's environment.
    cwd: Working folder.
  """
  name: str
  argv: Sequence[str]
  env: Dict[str, str] = dataclasses.field(default_factory=dict)
  cwd: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Record:
  """A started service: enough to find it again, and only it."""
  name: str
  pid: int
  start_ticks: int
  argv: List[str]


def _stat(pid: int) -> Optional[List[str]]:
  """Fields of ``/proc/PID/stat`` after the command name, or None."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      data = f.read()
  except OSError:
    return None
  return data[data.rindex(')') + 2:].split()


def start_ticks(pid: int) -> Optional[int]:
  fields = _stat(pid)
  return int(fields[19]) if fields else None  # field 22: starttime


def is_alive(record: Record) -> bool:
  """Whether the recorded process still runs (a zombie does not)."""
  fields = _stat(record.pid)
  if not fields:
    return False
  return fields[0] != 'Z' and int(fields[19]) == record.start_ticks


def _record_path(folder: str, name: str) -> str:
  return os.path.join(folder, 'pids', f'{name}.json')


def log_path(folder: str, name: str) -> str:
  return os.path.join(folder, 'logs', f'{name}.out')


def read_record(folder: str, name: str) -> Optional[Record]:
  try:
    with open(_record_path(folder, name)) as f:
      return Record(**json.load(f))
  except (OSError, ValueError, TypeError):
    return None


def start(service: Service, folder: str) -> Record:
  """Starts ``service`` in its own session; records it under ``folder``."""
  os.makedirs(os.path.join(folder, 'pids'), exist_ok=True)
  os.makedirs(os.path.join(folder, 'logs'), exist_ok=True)
  env = dict(os.environ)
  env.update(service.env)
  with open(log_path(folder, service.name), 'ab') as log:
    process = subprocess.Popen(
        list(service.argv), stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, env=env, cwd=service.cwd,
        start_new_session=True)
  ticks = start_ticks(process.pid)
  record = Record(service.name, process.pid, ticks or 0, list(service.argv))
  path = _record_path(folder, service.name)
  with open(path + '.tmp', 'w') as f:
    json.dump(dataclasses.asdict(record), f)
  os.replace(path + '.tmp', path)
  return record


def _signal_group(record: Record, signum: int) -> None:
  try:
    os.killpg(record.pid, signum)
  except ProcessLookupError:
    pass


def stop(folder: str, name: str, timeout_s: float = 20) -> bool:
  """Stops a recorded service and everything in its process group.

  SIGTERM first (Flink and Beam shut down cleanly on it), SIGKILL after
  ``timeout_s``. Returns whether a running process was stopped; the record
  is removed either way.
  """
  record = read_record(folder, name)
  if record is None:
    return False
  running = is_alive(record)
  if running:
    _signal_group(record, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while is_alive(record) and time.monotonic() < deadline:
      time.sleep(0.2)
    # The leader may be gone while its children (SDK workers) are not.
    _signal_group(record, signal.SIGKILL)
  try:
    os.remove(_record_path(folder, name))
  except FileNotFoundError:
    pass
  return running


def log_tail(folder: str, name: str, lines: int = 20) -> str:
  try:
    with open(log_path(folder, name), 'rb') as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(0, f.tell() - 16384))
      text = f.read().decode(errors='replace')
  except OSError:
    return '(no log)'
  return '\n'.join(text.splitlines()[-lines:])
