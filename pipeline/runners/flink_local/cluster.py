"""Start, check and stop a local Flink cluster for featurize.

One folder holds the cluster (``settings.cluster_dir``)::

    settings.json        the settings it was started with
    conf/<service>/      Flink configuration of the JobManager and of each
                         TaskManager (its own hosts file beside it)
    logs/                <service>.out for every process, Flink's own logs
    pids/<service>.json  what was started (see ``processes``)
    pools/pool-N/        each worker pool's boot script and health file
    tmp/, artifacts/     Flink's temporary files and blobs; staged jobs

What runs there is ``services``; how it is configured, ``configuration``.
"""
import contextlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
from typing import Dict, List, NamedTuple, Optional

from pipeline.runners.flink_local import (configuration, distribution,
                                          job_server, processes, services)
from pipeline.runners.flink_local.configuration import ClusterError
from pipeline.runners.flink_local.settings import ClusterSettings


def _listening(host: str, port: int) -> bool:
  try:
    with socket.create_connection((host, port), timeout=1):
      return True
  except OSError:
    return False


def rest(settings: ClusterSettings, path: str, method: str = 'GET',
         timeout: float = 5) -> Optional[dict]:
  """The local cluster's REST API; None when it does not answer."""
  return rest_at(settings.rest_url, path, method, timeout)


def rest_at(url: str, path: str, method: str = 'GET',
            timeout: float = 5) -> Optional[dict]:
  """Flink's REST API at ``url`` (``http://host:port``), any cluster's;
  None when it does not answer."""
  request = urllib.request.Request(url.rstrip('/') + path, method=method)
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      body = response.read()
  except (urllib.error.URLError, OSError):
    return None
  return json.loads(body) if body else {}


class ServiceState(NamedTuple):
  name: str
  pid: Optional[int]
  running: bool


class ClusterStatus(NamedTuple):
  """What ``status`` found.

  Attributes:
    services: Each service, in start order.
    overview: Flink's ``/overview`` (TaskManagers, slots, job counts), or
      None when the REST API does not answer.
    pool_problems: Worker pools whose worker Python cannot run featurize,
      with the reason.
    listening: Whether every service's ports accept connections.
  """
  services: List[ServiceState]
  overview: Optional[dict]
  pool_problems: Dict[str, str]
  listening: bool

  @property
  def healthy(self) -> bool:
    return (all(s.running for s in self.services) and self.listening
            and self.overview is not None
            and self.overview.get('taskmanagers') == sum(
                s.name.startswith('tm-') for s in self.services))


def _pool_health(settings: ClusterSettings, name: str) -> str:
  """The file a pool writes once it has checked its Python and listens."""
  return settings.path('pools', name, 'health.json')


def _pool_problem(settings: ClusterSettings, name: str) -> Optional[str]:
  try:
    with open(_pool_health(settings, name)) as f:
      return json.load(f)['problem']
  except (OSError, ValueError, KeyError):
    return None


def _pool_ready(settings: ClusterSettings, name: str) -> bool:
  return os.path.isfile(_pool_health(settings, name))


def status(settings: ClusterSettings) -> ClusterStatus:
  folder = settings.cluster_dir
  assert folder is not None  # ClusterSettings.__post_init__ sets it
  states, problems, listening = [], {}, True
  for name in services.service_names(settings):
    record = processes.read_record(folder, name)
    running = record is not None and processes.is_alive(record)
    states.append(ServiceState(name, record.pid if record else None, running))
    if running:
      listening &= all(_listening(h, p)
                       for h, p in services.ports(settings, name))
      if name.startswith('pool-'):
        listening &= _pool_ready(settings, name)
        problem = _pool_problem(settings, name)
        if problem:
          problems[name] = problem
  overview = rest(settings, '/overview') if states[0].running else None
  return ClusterStatus(states, overview, problems, listening)


def start(settings: ClusterSettings, python: str, timeout_s: float = 240,
          log=print) -> ClusterStatus:
  """Starts every service that is not running, then waits until healthy.

  Nothing is downloaded here: ``setup`` must have run. A service that is
  already running is left alone, so ``start`` also brings back one that
  died (a killed TaskManager, say). When a service cannot start or the
  cluster is not healthy within ``timeout_s``, what this call started is
  stopped again.

  Raises:
    ClusterError: not set up, a port taken, a service died, or a time-out.
  """
  if not distribution.is_ready(settings) or not job_server.is_ready(settings):
    raise ClusterError('the Flink distribution or the job server is missing '
                       f'under {settings.home}: run `featurize flink-local '
                       'setup` first')
  folder = settings.cluster_dir
  assert folder is not None  # ClusterSettings.__post_init__ sets it
  current = status(settings) if os.path.isfile(
      settings.path('settings.json')) else None
  running = ({s.name for s in current.services if s.running}
             if current else set())
  if not running:
    configuration.write_configuration(settings)
  else:
    configuration.check_compatible(
        configuration.load_settings(folder), settings, running)
  to_start = [n for n in services.service_names(settings) if n not in running]
  for name in to_start:
    for host, port in services.ports(settings, name):
      # Something that answers there, not merely a bound socket: a pool
      # stopped a moment ago leaves connections closing on its port that
      # do not keep a new pool from listening.
      if _listening(host, port):
        raise ClusterError(
            f'{host}:{port}, needed by {name}, is in use: another Flink '
            'cluster or job server? (featurize flink-local status)')
  commands = services.services(settings, python)
  started = []
  try:
    for name in to_start:
      log(f'flink-local: starting {name}')
      if name.startswith('pool-'):  # An earlier pool's verdict is stale.
        with contextlib.suppress(FileNotFoundError):
          os.remove(_pool_health(settings, name))
      processes.start(commands[name], folder)
      started.append(name)
    return wait_healthy(settings, timeout_s)
  except BaseException:
    for name in reversed(started):
      processes.stop(folder, name)
    raise


def wait_healthy(settings: ClusterSettings,
                 timeout_s: float = 240) -> ClusterStatus:
  """Waits until every service runs and listens and every TaskManager
  has registered; fails as soon as a service dies."""
  folder = settings.cluster_dir
  assert folder is not None  # ClusterSettings.__post_init__ sets it
  deadline = time.monotonic() + timeout_s
  while True:
    current = status(settings)
    dead = [s.name for s in current.services if not s.running]
    if dead:
      name = dead[0]
      raise ClusterError(
          f'{name} is not running; the end of '
          f'{processes.log_path(folder, name)}:\n'
          f'{processes.log_tail(folder, name)}')
    if current.healthy:
      return current
    if time.monotonic() > deadline:
      raise ClusterError(
          f'the cluster was not healthy after {timeout_s:.0f} s: '
          f'{describe(settings, current)}')
    time.sleep(1)


def stop(settings: ClusterSettings,
         names: Optional[List[str]] = None) -> List[str]:
  """Stops the named services (default: all), last started first.

  Only processes this cluster's PID records name, and that are still the
  processes that were started, are signalled. Returns the names stopped.
  """
  folder = settings.cluster_dir
  assert folder is not None  # ClusterSettings.__post_init__ sets it
  stopped = []
  for name in reversed(services.service_names(settings)):
    if names is None or name in names:
      if processes.stop(folder, name):
        stopped.append(name)
  return stopped


def describe(settings: ClusterSettings, current: ClusterStatus) -> str:
  """A few lines for a person: each service, then what Flink reports."""
  lines = [f'cluster folder {settings.cluster_dir} (logs in '
           f'{settings.path("logs")})']
  for service in current.services:
    state = (f'running, pid {service.pid}' if service.running else
             'not running')
    extra = ''
    if service.name.startswith('pool-'):
      index = int(service.name.split('-')[1])
      extra = (f'  {settings.worker_pool_ip(index)}:'
               f'{settings.worker_pool_port}, workers: '
               f'{settings.worker_python}')
      if service.name in current.pool_problems:
        extra += f'\n      PROBLEM: {current.pool_problems[service.name]}'
    lines.append(f'  {service.name:<11} {state}{extra}')
  overview = current.overview
  if overview is None:
    lines.append(f'Flink REST {settings.rest_url}: no answer')
  else:
    lines.append(
        f'Flink REST {settings.rest_url}: {overview["taskmanagers"]} '
        f'TaskManagers, {overview["slots-total"]} slots '
        f'({overview["slots-available"]} free); jobs running '
        f'{overview["jobs-running"]}, finished {overview["jobs-finished"]}, '
        f'failed {overview["jobs-failed"]}, cancelled '
        f'{overview["jobs-cancelled"]}')
  lines.append(f'job endpoint localhost:{settings.job_port}; '
               f'--environment_config={settings.environment_config}')
  return '\n'.join(lines)
