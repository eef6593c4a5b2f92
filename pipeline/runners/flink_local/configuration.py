"""What a local cluster is configured with: Flink's ``config.yaml`` per
JobManager and TaskManager, each TaskManager's hosts file, and the
settings it was started with (``settings.json``)."""
import copy
import dataclasses
import json
import os
import shutil
import socket
from typing import Any, Dict, Optional

import yaml

from pipeline.runners.flink_local.services import (JOBMANAGER, pool_name,
                                                   taskmanager_name)
from pipeline.runners.flink_local.settings import ClusterSettings


class ClusterError(Exception):
  """The cluster could not be started, or is not healthy."""


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
  ours: Dict[str, Any] = {
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


def write_configuration(settings: ClusterSettings) -> None:
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
  save_settings(settings)


def save_settings(settings: ClusterSettings) -> None:
  with open(settings.path('settings.json'), 'w') as f:
    json.dump(dataclasses.asdict(settings), f, indent=2)


def load_settings(cluster_dir: str) -> ClusterSettings:
  """The settings a cluster was started with."""
  try:
    with open(os.path.join(cluster_dir, 'settings.json')) as f:
      return ClusterSettings(**json.load(f))
  except FileNotFoundError:
    raise ClusterError(f'no cluster was started in {cluster_dir}') from None


def check_compatible(saved: ClusterSettings, wanted: ClusterSettings,
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
    save_settings(wanted)
