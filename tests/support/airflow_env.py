"""Airflow for the tests: its own virtualenv, built once, and a home.

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
import subprocess
import sys
from typing import Dict, List, NamedTuple, Optional
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
