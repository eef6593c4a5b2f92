"""What runs in a local cluster: each service's name, command line and
ports. No I/O here.

Services, in start order: ``jobmanager``, ``tm-1`` .. ``tm-N``,
``job-server``, ``pool-1`` .. ``pool-N``. TaskManager N sends its SDK
workers to pool N (see ``configuration.hosts_file``).
"""
import os
from typing import Dict, List, Tuple

from pipeline.runners.flink_local.processes import Service
from pipeline.runners.flink_local.settings import ClusterSettings

JOBMANAGER = 'jobmanager'
JOB_SERVER = 'job-server'


def taskmanager_name(index: int) -> str:
  return f'tm-{index}'


def pool_name(index: int) -> str:
  return f'pool-{index}'


def service_names(settings: ClusterSettings) -> List[str]:
  """Every service of the cluster, in start order."""
  indexes = range(1, settings.taskmanagers + 1)
  return ([JOBMANAGER] + [taskmanager_name(i) for i in indexes] + [JOB_SERVER]
          + [pool_name(i) for i in indexes])


def _flink_service(settings: ClusterSettings, name: str, script: str,
                   conf_dir: str) -> Service:
  return Service(
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
                                                             Service]:
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
  result[JOB_SERVER] = Service(
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
    result[name] = Service(
        name=name,
        argv=[python, '-m', 'pipeline.runners.flink_local.worker_pool',
              f'--address={settings.worker_pool_ip(i)}:'
              f'{settings.worker_pool_port}',
              f'--worker-python={settings.worker_python}',
              f'--folder={folder}'],
        # Beam's workers and tools find "python" on PATH: the worker
        # environment's bin/ comes first.
        env={'PATH': worker_bin + os.pathsep + os.environ.get('PATH', '')},
        cwd=folder)
  return result


def ports(settings: ClusterSettings, name: str) -> List[Tuple[str, int]]:
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
