"""Start, check and stop a local Flink cluster for featurize.

One folder holds the cluster (``settings.cluster_dir``)::

    settings.json        the settings it was started with
    conf/<service>/      Flink configuration of the JobManager and of each
                         TaskManager (its own hosts file beside it)
    logs/                <service>.out for every process, Flink's own logs
    pids/<service>.json  what was started (see ``processes``)
    pools/pool-N/        each worker pool's boot script and health file
    tmp/, artifacts/     Flink's temporary files and blobs; staged jobs

Services, in start order: ``jobmanager``, ``tm-1`` .. ``tm-N``,
``job-server``, ``pool-1`` .. ``pool-N``. TaskManager N sends its SDK
workers to pool N: its JVM resolves ``settings.worker_pool_host`` through a
hosts file of its own (``-Djdk.net.hosts.file``) to pool N's address.
"""
import contextlib
import copy
import dataclasses
import json
import os
import shutil
import socket
import time
import urllib.error
import urllib.request
from typing import Dict, List, NamedTuple, Optional

import yaml

from pipeline.flink_local import distribution, job_server, processes
from pipeline.flink_local.settings import ClusterSettings

JOBMANAGER = 'jobmanager'
JOB_SERVER = 'job-server'


class ClusterError(Exception):
  """The cluster could not be started, or is not healthy."""


def taskmanager_name(index: int) -> str:
  return f'tm-{index}'


def pool_name(index: int) -> str:
  return f'pool-{index}'


def service_names(settings: ClusterSettings) -> List[str]:
  """Every service of the cluster, in start order."""
  indexes = range(1, settings.taskmanagers + 1)
  return ([JOBMANAGER] + [taskmanager_name(i) for i in indexes] + [JOB_SERVER]
          + [pool_name(i) for i in indexes])


def _merge(base: dict, extra: dict) -> dict:
  merged = copy.deepcopy(base)
  for key, value in extra.items():
    if isinstance(value, dict) and isinstance(merged.get(key), dict):
      merged[key] = _merge(merged[key], value)
    else:
      merged[key] = value
  return merged


def flink_config(settings: ClusterSettings, base: dict,
                 taskmanager: Optional[int] = None) -> dict:
  """Flink's ``config.yaml`` for the JobManager or TaskManager ``N``.

  Args:
    settings: The cluster.
    base: The distribution's own ``conf/config.yaml``, parsed.
    taskmanager: Index of a TaskManager, or None for the JobManager.
  """
  tmp = settings.path('tmp')
  ours = {
      'jobmanager': {
          'bind-host': 'localhost',
          'rpc': {'address': 'localhost', 'port': settings.rpc_port},
          'memory': {'process': {'size': settings.jobmanager_memory}},
          'execution': {'failover-strategy': 'region'},
      },
      'taskmanager': {
          'bind-host': 'localhost',
          'host': 'localhost',
          'numberOfTaskSlots': settings.slots,
          'memory': {'process': {'size': settings.taskmanager_memory}},
      },
      'rest': {'port': settings.rest_port, 'address': 'localhost',
               'bind-address': 'localhost'},
      'parallelism': {'default': settings.total_slots},
      # A failed job (a lost TaskManager, a failed bundle) is restarted
      # from the start; Beam's batch translation has no checkpoints.
      'restart-strategy': {
          'type': 'fixed-delay',
          'fixed-delay': {'attempts': settings.restart_attempts,
                          'delay': f'{settings.restart_delay_s} s'},
      },
      'heartbeat': {'interval': min(2000, settings.heartbeat_timeout_ms // 3),
                    'timeout': settings.heartbeat_timeout_ms},
      'slot': {'request': {'timeout': settings.slot_request_timeout_ms}},
      # Every job ships the job server's classpath (~150 MB) as blobs:
      # keep them in the cluster's folder, and clean them up.
      'io': {'tmp': {'dirs': tmp}},
      'web': {'tmpdir': os.path.join(tmp, 'web')},
      'blob': {'storage': {'directory': os.path.join(tmp, 'blobs')},
               'service': {'cleanup': {'interval': 300}}},
  }
  if taskmanager is not None:
    ours['taskmanager']['resource-id'] = taskmanager_name(taskmanager)
    ours['env'] = {'java': {'opts': {'taskmanager': (
        '-Djdk.net.hosts.file='
        + settings.path('conf', taskmanager_name(taskmanager), 'hosts'))}}}
  return _merge(base, ours)


def hosts_file(settings: ClusterSettings, taskmanager: int,
               hostname: str) -> str:
  """TaskManager ``N``'s hosts file: the JVM resolves names only from it."""
  return (f'127.0.0.1 localhost {hostname}\n'
          '::1 localhost\n'
          f'{settings.worker_pool_ip(taskmanager)} '
          f'{settings.worker_pool_host}\n')


def _flink_service(settings: ClusterSettings, name: str, script: str,
                   conf_dir: str) -> processes.Service:
  return processes.Service(
      name=name,
      argv=[os.path.join(settings.flink_dir, 'bin', script),
            'start-foreground'],
      env={'FLINK_CONF_DIR': conf_dir,
           'FLINK_LOG_DIR': settings.path('logs'),
           'FLINK_PID_DIR': settings.path('pids', 'flink'),
           'FLINK_IDENT_STRING': name,
           # Flink's log file gets everything; keep the .out file short.
           'JVM_ARGS': '-Dconsole.log.level=OFF'},
      cwd=settings.cluster_dir)


def services(settings: ClusterSettings, python: str) -> Dict[str,
                                                             processes.Service]:
  """Every service's command line, by name (no I/O).

  Args:
    settings: The cluster.
    python: The Python that runs the worker pools (it needs apache-beam);
      their workers run ``settings.worker_python``.
  """
  result = {JOBMANAGER: _flink_service(settings, JOBMANAGER, 'jobmanager.sh',
                                       settings.path('conf', JOBMANAGER))}
  for i in range(1, settings.taskmanagers + 1):
    name = taskmanager_name(i)
    result[name] = _flink_service(settings, name, 'taskmanager.sh',
                                  settings.path('conf', name))
  result[JOB_SERVER] = processes.Service(
      name=JOB_SERVER,
      argv=['java', '-Xmx1g', '-jar', settings.job_server_launcher,
            f'--flink-master=localhost:{settings.rest_port}',
            f'--job-port={settings.job_port}',
            f'--artifact-port={settings.artifact_port}',
            f'--expansion-port={settings.expansion_port}',
            f'--artifacts-dir={settings.path("artifacts")}'],
      cwd=settings.cluster_dir)
  worker_bin = os.path.dirname(settings.worker_python)
  for i in range(1, settings.taskmanagers + 1):
    name = pool_name(i)
    folder = settings.path('pools', name)
    result[name] = processes.Service(
        name=name,
        argv=[python, '-m', 'pipeline.flink_local.worker_pool',
              f'--address={settings.worker_pool_ip(i)}:'
              f'{settings.worker_pool_port}',
              f'--worker-python={settings.worker_python}',
              f'--folder={folder}'],
        # Beam's workers and tools find "python" on PATH: the worker
        # environment's bin/ comes first.
        env={'PATH': worker_bin + os.pathsep + os.environ.get('PATH', '')},
        cwd=folder)
  return result


def _write_configuration(settings: ClusterSettings) -> None:
  dist_conf = os.path.join(settings.flink_dir, 'conf')
  with open(os.path.join(dist_conf, 'config.yaml')) as f:
    base = yaml.safe_load(f)
  hostname = socket.gethostname()
  targets = [(JOBMANAGER, None)] + [
      (taskmanager_name(i), i) for i in range(1, settings.taskmanagers + 1)]
  for name, index in targets:
    conf_dir = settings.path('conf', name)
    shutil.rmtree(conf_dir, ignore_errors=True)
    shutil.copytree(dist_conf, conf_dir)
    with open(os.path.join(conf_dir, 'config.yaml'), 'w') as f:
      yaml.safe_dump(flink_config(settings, base, index), f)
    if index is not None:
      with open(os.path.join(conf_dir, 'hosts'), 'w') as f:
        f.write(hosts_file(settings, index, hostname))
  for folder in ('tmp', 'artifacts', 'logs', 'pids'):
    os.makedirs(settings.path(folder), exist_ok=True)
  for i in range(1, settings.taskmanagers + 1):
    os.makedirs(settings.path('pools', pool_name(i)), exist_ok=True)
  with open(settings.path('settings.json'), 'w') as f:
    json.dump(dataclasses.asdict(settings), f, indent=2)


def load_settings(cluster_dir: str) -> ClusterSettings:
  """The settings a cluster was started with."""
  try:
    with open(os.path.join(cluster_dir, 'settings.json')) as f:
      return ClusterSettings(**json.load(f))
  except FileNotFoundError:
    raise ClusterError(f'no cluster was started in {cluster_dir}') from None


def _ports(settings: ClusterSettings, name: str) -> List[tuple]:
  """(host, port) pairs the service listens on."""
  if name == JOBMANAGER:
    return [('127.0.0.1', settings.rest_port),
            ('127.0.0.1', settings.rpc_port)]
  if name == JOB_SERVER:
    return [('127.0.0.1', p) for p in (settings.job_port,
                                       settings.artifact_port,
                                       settings.expansion_port)]
  if name.startswith('pool-'):
    index = int(name.split('-')[1])
    return [(settings.worker_pool_ip(index), settings.worker_pool_port)]
  return []


def _listening(host: str, port: int) -> bool:
  try:
    with socket.create_connection((host, port), timeout=1):
      return True
  except OSError:
    return False


def rest(settings: ClusterSettings, path: str, method: str = 'GET',
         timeout: float = 5) -> Optional[dict]:
  """Flink's REST API; None when it does not answer."""
  request = urllib.request.Request(settings.rest_url + path, method=method)
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
  states, problems, listening = [], {}, True
  for name in service_names(settings):
    record = processes.read_record(settings.cluster_dir, name)
    running = record is not None and processes.is_alive(record)
    states.append(ServiceState(name, record.pid if record else None, running))
    if running:
      listening &= all(_listening(h, p) for h, p in _ports(settings, name))
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
  current = status(settings) if os.path.isfile(
      settings.path('settings.json')) else None
  running = {s.name for s in current.services if s.running} if current else set()
  if not running:
    _write_configuration(settings)
  else:
    _check_compatible(load_settings(settings.cluster_dir), settings, running)
  to_start = [n for n in service_names(settings) if n not in running]
  for name in to_start:
    for host, port in _ports(settings, name):
      # Something that answers there, not merely a bound socket: a pool
      # stopped a moment ago leaves connections closing on its port that
      # do not keep a new pool from listening.
      if _listening(host, port):
        raise ClusterError(
            f'{host}:{port}, needed by {name}, is in use: another Flink '
            'cluster or job server? (featurize flink-local status)')
  commands = services(settings, python)
  started = []
  try:
    for name in to_start:
      log(f'flink-local: starting {name}')
      if name.startswith('pool-'):  # An earlier pool's verdict is stale.
        with contextlib.suppress(FileNotFoundError):
          os.remove(_pool_health(settings, name))
      processes.start(commands[name], settings.cluster_dir)
      started.append(name)
    return wait_healthy(settings, timeout_s)
  except BaseException:
    for name in reversed(started):
      processes.stop(settings.cluster_dir, name)
    raise


def _check_compatible(saved: ClusterSettings, wanted: ClusterSettings,
                      running: set) -> None:
  """A running cluster is completed, not reconfigured; only the worker
  Python may change, and only while no pool runs."""
  pools_running = any(name.startswith('pool-') for name in running)
  if (dataclasses.replace(saved, worker_python=wanted.worker_python) != wanted
      or (saved.worker_python != wanted.worker_python and pools_running)):
    raise ClusterError(
        f'a cluster with other settings runs in {wanted.cluster_dir}: stop '
        'it first (the worker Python can change once the pools are '
        'stopped)')
  if saved != wanted:
    with open(wanted.path('settings.json'), 'w') as f:
      json.dump(dataclasses.asdict(wanted), f, indent=2)


def wait_healthy(settings: ClusterSettings,
                 timeout_s: float = 240) -> ClusterStatus:
  """Waits until every service runs and listens and every TaskManager
  has registered; fails as soon as a service dies."""
  deadline = time.monotonic() + timeout_s
  while True:
    current = status(settings)
    dead = [s.name for s in current.services if not s.running]
    if dead:
      name = dead[0]
      raise ClusterError(
          f'{name} is not running; the end of '
          f'{processes.log_path(settings.cluster_dir, name)}:\n'
          f'{processes.log_tail(settings.cluster_dir, name)}')
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
  stopped = []
  for name in reversed(service_names(settings)):
    if names is None or name in names:
      if processes.stop(settings.cluster_dir, name):
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
