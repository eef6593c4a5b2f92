"""The settings of a local Flink cluster: one frozen object, no I/O.

The ports and the worker-pool address here are the ones
``run_configs/flink.yaml`` names; ``tests/unit/pipeline/test_flink_local.py``
(``test_run_config_names_what_the_cluster_serves``) keeps the two in
agreement.
"""
import dataclasses
import os
import sys
from typing import Optional

FLINK_VERSION = '1.19.3'
# Beam Java's newest Flink job server whose whole dependency closure Maven
# Central serves here; the Python SDK (2.77.0) talks to it over Beam's
# portable job API.
BEAM_JOB_SERVER_VERSION = '2.62.0'

# The host name the job's EXTERNAL environment names. Each TaskManager
# resolves it, through a hosts file of its own (the JVM's
# jdk.net.hosts.file), to the loopback address of its own worker pool: one
# pool per TaskManager on one machine, as a sidecar per pod on Kubernetes.
WORKER_POOL_HOST = 'featurize-worker-pool'
WORKER_POOL_PORT = 50000


def default_home() -> str:
  """Where downloads and the assembled distribution are cached."""
  cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.environ.get('FEATURIZE_FLINK_HOME') or os.path.join(
      cache, 'featurize', 'flink-local')


@dataclasses.dataclass(frozen=True)
class ClusterSettings:
  """One local Flink cluster.

  Attributes:
    home: Cache of downloads, the Flink distribution and the job server.
    cluster_dir: This cluster's folder: configuration, logs, PIDs,
      temporary files and staged artifacts.
    flink_version: Version of the Flink distribution (a 1.19 release).
    job_server_version: Version of Beam's Flink job server built with Maven.
    job_server_jar: An official ``beam-runners-flink-1.19-job-server`` jar
      to run instead of building one.
    taskmanagers: How many TaskManagers (each with its worker pool).
    slots: Task slots per TaskManager.
    jobmanager_memory: JobManager process size (Flink's syntax).
    taskmanager_memory: TaskManager process size. Python workers run in
      the worker pools, outside this budget.
    rest_port: Flink's REST API and web UI.
    rpc_port: JobManager RPC port.
    job_port: Beam job service (``--job_endpoint``).
    artifact_port: Beam artifact staging service.
    expansion_port: Beam expansion service.
    worker_pool_host: Host name of the EXTERNAL environment.
    worker_pool_port: Port of every worker pool.
    worker_python: Python of the SDK workers; its environment must hold
      apache-beam and featurize.
    restart_attempts: Flink restarts a failed job this many times.
    restart_delay_s: Seconds between restarts.
    heartbeat_timeout_ms: How soon a lost TaskManager is noticed.
    slot_request_timeout_ms: How long a restarted job waits for slots.
  """
  home: str = dataclasses.field(default_factory=default_home)
  cluster_dir: Optional[str] = None
  flink_version: str = FLINK_VERSION
  job_server_version: str = BEAM_JOB_SERVER_VERSION
  job_server_jar: Optional[str] = None
  taskmanagers: int = 2
  slots: int = 2
  jobmanager_memory: str = '1024m'
  taskmanager_memory: str = '2560m'
  rest_port: int = 8081
  rpc_port: int = 6123
  job_port: int = 8099
  artifact_port: int = 8098
  expansion_port: int = 8097
  worker_pool_host: str = WORKER_POOL_HOST
  worker_pool_port: int = WORKER_POOL_PORT
  worker_python: str = sys.executable
  restart_attempts: int = 2
  restart_delay_s: int = 5
  heartbeat_timeout_ms: int = 10_000
  slot_request_timeout_ms: int = 60_000

  def __post_init__(self):
    if not 1 <= self.taskmanagers <= 250:
      raise ValueError('taskmanagers must be within 1..250')
    if self.slots < 1:
      raise ValueError('slots must be at least 1')
    if not self.flink_version.startswith('1.19.'):
      raise ValueError('the job server is built for Flink 1.19; '
                       f'got flink_version {self.flink_version}')
    if self.cluster_dir is None:
      object.__setattr__(self, 'cluster_dir',
                         os.path.join(self.home, 'cluster'))
    for name in ('home', 'cluster_dir'):
      object.__setattr__(self, name, os.path.abspath(getattr(self, name)))

  # Where things are. Only names: nothing here touches the disk.
  @property
  def flink_dir(self) -> str:
    return os.path.join(self.home, f'flink-{self.flink_version}')

  @property
  def job_server_dir(self) -> str:
    return os.path.join(self.home,
                        f'beam-flink-job-server-{self.job_server_version}')

  @property
  def job_server_launcher(self) -> str:
    """The jar ``java -jar`` runs: an official one, or our launcher."""
    return self.job_server_jar or os.path.join(self.job_server_dir,
                                               'job-server.jar')

  def path(self, *parts: str) -> str:
    """A path in the cluster folder."""
    assert self.cluster_dir is not None  # __post_init__ sets it
    return os.path.join(self.cluster_dir, *parts)

  @property
  def total_slots(self) -> int:
    return self.taskmanagers * self.slots

  @property
  def rest_url(self) -> str:
    return f'http://localhost:{self.rest_port}'

  def worker_pool_ip(self, index: int) -> str:
    """Loopback address of TaskManager ``index``'s pool (1-based)."""
    return f'127.0.50.{index}'

  @property
  def environment_config(self) -> str:
    """What ``--environment_config`` of a job on this cluster says."""
    return f'{self.worker_pool_host}:{self.worker_pool_port}'
