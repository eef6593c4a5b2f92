"""Runs one contender in its own process and measures it from outside.

Peak RSS per process comes from ``VmHWM`` in ``/proc/<pid>/status`` (the
high-water mark of that process's own memory), sampled over the whole
process tree every few tens of milliseconds; VmHWM only grows, so the last
sample of each process is its peak. ``ru_maxrss`` would not do: Linux
carries the parent's peak over fork/exec.
"""
import glob
import json
import os
import subprocess
import sys
import threading
import time
from typing import Dict, List, NamedTuple, Optional, Union


class Measurement(NamedTuple):
  """What one contender run did.

  Attributes:
    wall_s: Seconds from process start to exit.
    peak_rss_mb: Largest VmHWM over the process and its children.
    peak_rss_by_process_mb: VmHWM of each process (main first).
    report: The JSON line the contender printed last (its own timings).
    first_output_s: Seconds until a file matching ``first_output_glob``
      first held data, or None.
    done_s: Seconds until a file matching ``done_glob`` first existed, or
      None.
  """
  wall_s: float
  peak_rss_mb: float
  peak_rss_by_process_mb: List[float]
  report: dict
  first_output_s: Optional[float] = None
  done_s: Optional[float] = None


def _children(pid: int) -> List[int]:
  """Children of every thread of ``pid`` (a thread that starts a process
  is its parent, so the main thread's list alone misses some)."""
  children = []
  for path in glob.glob(f'/proc/{pid}/task/*/children'):
    try:
      with open(path) as f:
        children.extend(int(c) for c in f.read().split())
    except OSError:
      pass
  return children


def status_kb(pid: int, field: str = 'VmHWM') -> Optional[int]:
  """A memory field of ``/proc/PID/status`` in kB (VmHWM, VmRSS), or None."""
  try:
    with open(f'/proc/{pid}/status') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1])
  except OSError:
    return None
  return None


def _has_data(pattern: str) -> bool:
  for path in glob.glob(pattern):
    try:
      if os.path.getsize(path) > 0:
        return True
    except OSError:  # renamed or deleted between glob and stat
      pass
  return False


def process_tree(pid: int) -> List[int]:
  pids, queue = [], [pid]
  while queue:
    current = queue.pop()
    pids.append(current)
    queue.extend(_children(current))
  return pids


def run_measured(command: List[str], cwd: str,
                 env: Optional[Dict[str, str]] = None,
                 timeout_s: float = 3600,
                 first_output_glob: Union[None, str, List[str]] = None,
                 done_glob: Optional[str] = None) -> Measurement:
  """Runs ``command``, sampling the memory of its process tree.

  The command must print a JSON object as its last stdout line. With
  ``first_output_glob`` (a pattern, or a list of them), also notes when a
  matching file first holds data (the time to the first output record);
  with ``done_glob``, when a
  matching file first exists (``_SUCCESS``).

  Raises:
    RuntimeError: the command failed (its stderr tail is in the message).
  """
  start = time.perf_counter()
  process = subprocess.Popen(command, cwd=cwd, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  peaks: Dict[int, int] = {}
  first_output: List[float] = []
  finished: List[float] = []
  done = threading.Event()

  def sample():
    while not done.is_set():
      if first_output_glob and not first_output and any(
          _has_data(p) for p in ([first_output_glob] if isinstance(
              first_output_glob, str) else first_output_glob)):
        first_output.append(time.perf_counter() - start)
      if done_glob and not finished and glob.glob(done_glob):
        finished.append(time.perf_counter() - start)
      for pid in process_tree(process.pid):
        value = status_kb(pid)
        if value is not None:
          peaks[pid] = max(peaks.get(pid, 0), value)
      done.wait(0.05)

  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  try:
    stdout, stderr = process.communicate(timeout=timeout_s)
  finally:
    done.set()
    sampler.join()
  wall = time.perf_counter() - start
  if process.returncode != 0:
    raise RuntimeError(f'{" ".join(command)} failed:\n{stderr[-3000:]}')
  lines = [line for line in stdout.strip().splitlines() if line.startswith('{')]
  report = json.loads(lines[-1]) if lines else {}
  # The contender's own VmHWM at exit is exact for its main process.
  if 'peak_rss_kb' in report:
    peaks[process.pid] = max(peaks.get(process.pid, 0), report['peak_rss_kb'])
  by_process = [peaks[process.pid] / 1024] + [
      v / 1024 for p, v in sorted(peaks.items()) if p != process.pid]
  return Measurement(wall, max(by_process), by_process, report,
                     first_output[0] if first_output else None,
                     finished[0] if finished else None)


class TreePeaks:
  """Peak memory of named process trees, sampled in a background thread.

  For each tree: the largest sum of VmRSS over its processes in one sample
  (what the tree held at once), and the largest VmHWM of one process in it
  (a worker pool's SDK worker that holds VGG16, say). Use as a context
  manager around the work to measure.
  """

  def __init__(self, roots: Dict[str, int], interval_s: float = 0.1):
    self._roots = dict(roots)
    self._interval_s = interval_s
    self._tree_kb = {name: 0 for name in roots}
    self._process_kb = {name: 0 for name in roots}
    self._done = threading.Event()
    self._thread = threading.Thread(target=self._sample, daemon=True)

  def _sample(self):
    while not self._done.is_set():
      for name, root in self._roots.items():
        pids = process_tree(root)
        rss = [status_kb(pid, 'VmRSS') or 0 for pid in pids]
        hwm = [status_kb(pid) or 0 for pid in pids]
        self._tree_kb[name] = max(self._tree_kb[name], sum(rss))
        self._process_kb[name] = max([self._process_kb[name], *hwm])
      self._done.wait(self._interval_s)

  def __enter__(self) -> 'TreePeaks':
    self._thread.start()
    return self

  def __exit__(self, *unused_exc):
    self._done.set()
    self._thread.join()

  def peaks_mb(self) -> Dict[str, Dict[str, float]]:
    """``{name: {'tree_mb': ..., 'largest_process_mb': ...}}``."""
    return {name: {'tree_mb': round(self._tree_kb[name] / 1024, 1),
                   'largest_process_mb': round(
                       self._process_kb[name] / 1024, 1)}
            for name in self._roots}


def python_command(module: str, *args: str) -> List[str]:
  return [sys.executable, '-m', module, *args]


def machine() -> dict:
  """CPU model, flags that matter for VGG16, cores and memory."""
  info = {'cores': os.cpu_count()}
  try:
    with open('/proc/cpuinfo') as f:
      text = f.read()
    for line in text.splitlines():
      if line.startswith('model name'):
        info['cpu'] = line.split(':', 1)[1].strip()
        break
    flags = next((line.split(':', 1)[1].split() for line in text.splitlines()
                  if line.startswith('flags')), [])
    info['flags'] = sorted(f for f in flags if f.startswith(
        ('avx512', 'amx', 'avx2', 'fma', 'avx_vnni')))
    with open('/proc/meminfo') as f:
      info['memory_gb'] = round(int(f.readline().split()[1]) / 1024**2, 1)
  except OSError:
    pass
  return info
