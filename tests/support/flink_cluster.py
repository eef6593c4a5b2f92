"""A real local Flink cluster for the tests, and featurize runs on it.

Every run has a time limit: a job that hangs (the known failure mode of a
portable runner whose workers never start) fails its test, its process
group is killed and its Flink job cancelled, so the next test starts clean.
"""
import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, Iterator, List, NamedTuple, Optional

from pipeline.runners.flink_local import (cluster, distribution, job_server,
                                          processes, services)
from pipeline.runners.flink_local.settings import ClusterSettings
from tests.support.paths import ROOT


FLINK_CONFIG = os.path.join(ROOT, 'run_configs', 'flink.yaml')
FEATURIZE = os.path.join(os.path.dirname(sys.executable), 'featurize')
MODEL_LOAD = re.compile(r'Loading VGG16 in process (\d+)')


@contextlib.contextmanager
def running_cluster(cluster_dir: str, **overrides) -> Iterator[
    ClusterSettings]:
  """Sets up (cached), starts, yields, then stops a cluster; whatever
  happens, everything it started is stopped and its temporary files go."""
  settings = ClusterSettings(cluster_dir=cluster_dir, **overrides)
  distribution.prepare(settings)
  job_server.prepare(settings)
  started: List[processes.Record] = []
  try:
    cluster.start(settings, sys.executable, timeout_s=300)
    started = records(settings)
    yield settings
  finally:
    cancel_running_jobs(settings)
    started += records(settings)  # a TaskManager restarted by a test
    cluster.stop(settings)
    for folder in ('tmp', 'artifacts'):  # ~150 MB of blobs per job
      shutil.rmtree(settings.path(folder), ignore_errors=True)
  left = [r.name for r in started if processes.is_alive(r)]
  assert not left, f'still running after stop: {left}'


def flink_local(settings: ClusterSettings, *args: str,
                timeout_s: float = 300) -> subprocess.CompletedProcess:
  """``featurize flink-local ACTION --cluster-dir ... ARGS``, as a user
  types it; fails the test when it fails."""
  action, *rest = args
  result = subprocess.run(
      [FEATURIZE, 'flink-local', action, '--home', settings.home,
       '--cluster-dir', settings.cluster_dir, *rest],
      cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
  assert result.returncode == 0, (args, result.stdout, result.stderr)
  return result


def records(settings: ClusterSettings) -> List[processes.Record]:
  found = (processes.read_record(settings.cluster_dir, name)
           for name in services.service_names(settings))
  return [r for r in found if r is not None]


def pid_of(settings: ClusterSettings, name: str) -> int:
  return processes.read_record(settings.cluster_dir, name).pid


def jobs(settings: ClusterSettings) -> Dict[str, str]:
  """Flink job id -> state."""
  overview = cluster.rest(settings, '/jobs/overview') or {'jobs': []}
  return {job['jid']: job['state'] for job in overview['jobs']}


def cancel_running_jobs(settings: ClusterSettings) -> None:
  for jid, state in jobs(settings).items():
    if state not in ('FINISHED', 'FAILED', 'CANCELED'):
      cluster.rest(settings, f'/jobs/{jid}?mode=cancel', method='PATCH')


class RunResult(NamedTuple):
  returncode: int
  stdout: str
  stderr: str
  wall_s: float
  jobs: Dict[str, str]  # the Flink jobs this run made, with their states


class FeaturizeRun:
  """``featurize run --config run_configs/flink.yaml ...`` in the
  background, under a time limit."""

  def __init__(self, settings: ClusterSettings, args: List[str],
               config: str = FLINK_CONFIG):
    self._settings = settings
    self._jobs_before = set(jobs(settings))
    self._start = time.monotonic()
    self.process = subprocess.Popen(
        [FEATURIZE, 'run', '--config', config, *args], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)

  def new_jobs(self) -> Dict[str, str]:
    return {jid: state for jid, state in jobs(self._settings).items()
            if jid not in self._jobs_before}

  def wait(self, timeout_s: float) -> RunResult:
    """Waits for the run; on time-out kills it, cancels its job, raises."""
    try:
      stdout, stderr = self.process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
      os.killpg(self.process.pid, signal.SIGKILL)
      stdout, stderr = self.process.communicate()
      cancel_running_jobs(self._settings)
      raise AssertionError(
          f'featurize run did not finish within {timeout_s:.0f} s (Flink '
          f'jobs: {self.new_jobs()}); stderr:\n{stderr[-3000:]}') from None
    wall = time.monotonic() - self._start
    # The client returns when the job service reports the end; give the
    # REST overview a moment to agree.
    deadline = time.monotonic() + 30
    while (any(s not in ('FINISHED', 'FAILED', 'CANCELED')
               for s in self.new_jobs().values())
           and time.monotonic() < deadline):
      time.sleep(0.5)
    return RunResult(self.process.returncode, stdout, stderr, wall,
                     self.new_jobs())


def taskmanager_logs(settings: ClusterSettings) -> List[str]:
  """Flink's own log of each TaskManager: SDK worker logs land there."""
  return sorted(glob.glob(settings.path('logs', 'flink-tm-*-taskexecutor-*'
                                        '.log')))


def log_sizes(paths: List[str]) -> Dict[str, int]:
  return {p: os.path.getsize(p) for p in paths}


def read_since(sizes: Dict[str, int], paths: List[str]) -> Dict[str, str]:
  """What each log gained since ``sizes`` was taken."""
  text = {}
  for path in paths:
    with open(path, 'rb') as f:
      f.seek(sizes.get(path, 0))
      text[path] = f.read().decode(errors='replace')
  return text


def model_loads_by_log(logs: Dict[str, str]) -> Dict[str, List[int]]:
  """PIDs of the SDK workers that loaded VGG16, per TaskManager log."""
  return {path: [int(pid) for pid in MODEL_LOAD.findall(text)]
          for path, text in logs.items()}


def reported_model_loads(stdout: str) -> Optional[int]:
  """The count ``featurize run`` printed (from Beam's metrics)."""
  match = re.search(r'VGG16 loaded (\d+) time', stdout)
  return int(match.group(1)) if match else None
