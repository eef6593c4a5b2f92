"""Airflow for the tests: its own virtualenv, built once, a home, and its
services run live on loopback.

Airflow and featurize do not share an environment (nor should they in a
deployment): the tests run the ``airflow`` command of a virtualenv built
from ``deploy/airflow/requirements.txt`` in ``.airflow-venv/``. It is
reused while its stamp file holds the hash of that file and of this
Python's version, and rebuilt otherwise (about two minutes).
"""
import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

from tests.support.paths import ROOT


REQUIREMENTS = os.path.join(ROOT, 'deploy', 'airflow', 'requirements.txt')
VENV = os.path.join(ROOT, '.airflow-venv')
STAMP = 'requirements.sha256'


def requirements_hash(requirements: str = REQUIREMENTS) -> str:
  with open(requirements, 'rb') as f:
    data = f.read()
  return hashlib.sha256(data + sys.version.encode()).hexdigest()


def ensure_venv(venv: str = VENV, requirements: str = REQUIREMENTS) -> str:
  """Builds the virtualenv unless its stamp matches; returns its bin folder.

  Raises:
    RuntimeError: pip could not install the requirements (its output says
      why).
  """
  digest = requirements_hash(requirements)
  stamp = os.path.join(venv, STAMP)
  os.makedirs(venv, exist_ok=True)
  folder = os.open(venv, os.O_RDONLY)
  try:
    # Two test sessions must not build one virtualenv at the same time.
    fcntl.flock(folder, fcntl.LOCK_EX)
    if os.path.exists(stamp):
      with open(stamp) as f:
        if f.read().strip() == digest:
          return os.path.join(venv, 'bin')
    subprocess.run([sys.executable, '-m', 'venv', '--clear', venv],
                   check=True)
    pip = subprocess.run(
        [os.path.join(venv, 'bin', 'python'), '-m', 'pip', 'install',
         '--disable-pip-version-check', '-q', '-r', requirements],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if pip.returncode:
      raise RuntimeError(f'could not build {venv} from {requirements}:\n'
                         f'{pip.stdout[-5000:]}')
    with open(stamp, 'w') as f:  # last: a broken build is never reused
      f.write(digest + '\n')
    return os.path.join(venv, 'bin')
  finally:
    os.close(folder)


class Airflow(NamedTuple):
  """The ``airflow`` command of the virtualenv, on a home of its own.

  Attributes:
    bin: The virtualenv's bin folder.
    home: ``AIRFLOW_HOME``: its config, sqlite database and logs.
    dags: The DAGs folder.
  """
  bin: str
  home: str
  dags: str

  def environ(self, **overrides: str) -> Dict[str, str]:
    """This process's environment without its Airflow and virtualenv
    settings, with the home's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(
        'AIRFLOW') and k not in ('VIRTUAL_ENV', 'PYTHONPATH', 'PYTHONHOME')}
    env.update(AIRFLOW_HOME=self.home, AIRFLOW__CORE__DAGS_FOLDER=self.dags,
               AIRFLOW__CORE__LOAD_EXAMPLES='False')
    env.update(overrides)
    return env

  def run(self, *args: str, python: bool = False, timeout: float = 600,
          env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Runs ``airflow ARGS`` (or ``python ARGS`` with ``python``) in the
    home; stdout and stderr are kept apart."""
    command = os.path.join(self.bin, 'python' if python else 'airflow')
    return subprocess.run([command, *args], cwd=self.home, text=True,
                          capture_output=True, timeout=timeout,
                          env=self.environ(**(env or {})))

  def json(self, *args: str) -> List[dict]:
    """The ``-o json`` answer of ``airflow ARGS``."""
    result = self.run(*args, '-o', 'json')
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def start(home: str, dags: str) -> Airflow:
  """A new Airflow home on sqlite, its database created."""
  airflow = Airflow(ensure_venv(), home, dags)
  migrate = airflow.run('db', 'migrate')
  if migrate.returncode:
    raise RuntimeError(f'airflow db migrate failed:\n{migrate.stderr}')
  return airflow


def edit_defaults(source: str, values: Dict[str, object]) -> str:
  """The DAG file's text with values of its ``DEFAULTS`` replaced, as a
  user edits them: each ``'name': value,`` line gets ``repr(value)``.

  Raises:
    KeyError: a name has no line of its own in ``DEFAULTS``.
  """
  start = source.index('\nDEFAULTS')
  end = source.index('\n}\n', start)
  block = source[start:end]
  for name, value in values.items():
    block, count = re.subn(rf"^(    '{name}': ).*,$",
                           lambda m, v=value: m.group(1) + repr(v) + ',',
                           block, count=1, flags=re.M)
    if not count:
      raise KeyError(name)
  return source[:start] + block + source[end:]


def loopback(port: int) -> Dict[str, str]:
  """Settings that put the API server on ``127.0.0.1:port``, and tell the
  tasks where it is (they report to it: Airflow 3's execution API)."""
  return {'AIRFLOW__API__HOST': '127.0.0.1',
          'AIRFLOW__API__PORT': str(port),
          'AIRFLOW__CORE__EXECUTION_API_SERVER_URL':
              f'http://127.0.0.1:{port}/execution/'}


class Service(NamedTuple):
  """A long-running Airflow process, in a session of its own so that it
  and every process it starts can be stopped together."""
  process: subprocess.Popen
  log: str

  @classmethod
  def start(cls, argv: Sequence[str], env: Dict[str, str], log: str,
            cwd: Optional[str] = None) -> 'Service':
    with open(log, 'ab') as out:
      process = subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=out,
                                 stderr=subprocess.STDOUT,
                                 start_new_session=True)
    return cls(process, log)

  def running(self) -> List[int]:
    """The pids of its session still alive (zombies are not)."""
    alive = []
    for pid in os.listdir('/proc'):
      if not pid.isdigit():
        continue
      try:
        with open(f'/proc/{pid}/stat') as f:
          fields = f.read().rsplit(')', 1)[1].split()
      except OSError:
        continue
      # fields[0] is the state, fields[3] the session id.
      if int(fields[3]) == self.process.pid and fields[0] != 'Z':
        alive.append(int(pid))
    return alive

  def stop(self, timeout_s: float = 60) -> List[int]:
    """Stops it (``stop_together``); returns the pids that needed
    SIGKILL."""
    return stop_together([self], timeout_s)

  def tail(self, chars: int = 5000) -> str:
    with open(self.log, errors='replace') as f:
      return f.read()[-chars:]


def stop_together(services: Sequence[Service],
                  timeout_s: float = 60) -> List[int]:
  """SIGTERM to every service's session at once, as systemd stops units,
  SIGKILL to what outlives ``timeout_s``; returns the pids that needed
  SIGKILL."""
  for service in services:
    _signal_group(service.process.pid, signal.SIGTERM)
  deadline = time.monotonic() + timeout_s
  while (any(s.running() for s in services) and
         time.monotonic() < deadline):
    time.sleep(0.5)
  stubborn = [pid for s in services for pid in s.running()]
  for service in services:
    if service.running():
      _signal_group(service.process.pid, signal.SIGKILL)
    try:
      service.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      pass
  # A killed process leaves the process table a moment after the signal.
  deadline = time.monotonic() + 30
  while (any(s.running() for s in services) and
         time.monotonic() < deadline):
    time.sleep(0.2)
  return stubborn


def _signal_group(pgid: int, sig: int) -> None:
  try:
    os.killpg(pgid, sig)
  except ProcessLookupError:
    pass


def wait_until(check: Callable[[], Optional[object]], timeout_s: float,
               what: str, every_s: float = 2,
               explain: Callable[[], str] = lambda: '') -> object:
  """Polls ``check`` until it returns something truthy; returns that.

  Raises:
    AssertionError: ``timeout_s`` passed first (with ``explain()``).
  """
  deadline = time.monotonic() + timeout_s
  while True:
    found = check()
    if found:
      return found
    if time.monotonic() > deadline:
      raise AssertionError(f'{what}: not within {timeout_s:.0f} s\n'
                           f'{explain()}')
    time.sleep(every_s)


def api_healthy(port: int) -> bool:
  """Whether the API server on ``port`` answers, with a scheduler and a
  DAG processor that have reported in."""
  try:
    with urllib.request.urlopen(
        f'http://127.0.0.1:{port}/api/v2/monitor/health', timeout=5) as r:
      health = json.load(r)
  except (OSError, ValueError):
    return False
  return all(health.get(part, {}).get('status') == 'healthy'
             for part in ('metadatabase', 'scheduler', 'dag_processor'))


def runs(airflow: Airflow, dag_id: str) -> List[dict]:
  """The DAG's runs, newest first (``airflow dags list-runs``)."""
  return airflow.json('dags', 'list-runs', dag_id)


def finished_run(airflow: Airflow, dag_id: str, run_id_prefix: str,
                 known: Sequence[str] = (),
                 timeout_s: float = 600) -> dict:
  """Waits for a run whose id starts with ``run_id_prefix`` (other than
  the ``known`` ids) to end; returns it (``state`` success or failed)."""
  def ended():
    for run in runs(airflow, dag_id):
      if (run['run_id'].startswith(run_id_prefix) and
          run['run_id'] not in known and
          run['state'] in ('success', 'failed')):
        return run
    return None
  return wait_until(ended, timeout_s, f'a {run_id_prefix} run of {dag_id}',
                    every_s=3, explain=lambda: json.dumps(
                        runs(airflow, dag_id), indent=1))


def task_log(home: str, dag_id: str, run_id: str, task_id: str) -> List[dict]:
  """A task's log (its first try): one dict per logged event, ``event``
  its text, ``logger`` who logged it."""
  path = os.path.join(home, 'logs', f'dag_id={dag_id}', f'run_id={run_id}',
                      f'task_id={task_id}', 'attempt=1.log')
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def logged_by(log: List[dict], logger: str) -> List[str]:
  """The lines ``logger`` logged, from a ``task_log``."""
  return [e['event'] for e in log if e.get('logger') == logger]
