"""Where each runner puts a job's worker processes and threads.

The launcher asks whether a job runs in its own process tree
(``runs_locally``: the local GPU set-up, the lock's watch, the progress
line) and how many processes a local runner starts (``local_workers``);
``--memory-budget`` asks what each runner gives a worker process
(``runner_workers``: ``memory_plan`` divides the memory by it).
"""
import os
from typing import Callable, Optional, Sequence, Tuple

from pipeline import memory_plan


# Runners that run the whole job inside the launcher's process tree.
LOCAL_RUNNERS = ('FnApiRunner', 'DirectRunner', 'BundleBasedDirectRunner',
                 'SwitchingDirectRunner')


def runs_locally(beam_args: Sequence[str]) -> bool:
  """Whether the job runs in this process tree (so that it ends when
  this process is killed)."""
  from apache_beam.options.pipeline_options import (PipelineOptions,
                                                    StandardOptions)
  runner = PipelineOptions(list(beam_args)).view_as(StandardOptions).runner
  return (runner or 'DirectRunner').rsplit('.', 1)[-1] in LOCAL_RUNNERS


def local_workers(options) -> Tuple[int, int]:
  """``(processes, threads per process)`` that a local runner starts, from
  Beam's DirectRunner options (a ``PipelineOptions``): several processes
  with ``--direct_running_mode=multi_processing``, several threads of one
  with ``multi_threading``, one of each otherwise."""
  from apache_beam.options.pipeline_options import DirectOptions
  direct = options.view_as(DirectOptions)
  workers = direct.direct_num_workers
  if workers == 0:  # Beam's 'one per core'
    workers = os.cpu_count() or 1
  workers = max(1, workers)
  if direct.direct_running_mode == 'multi_processing':
    return workers, 1
  if direct.direct_running_mode == 'multi_threading':
    return 1, workers
  return 1, 1


# Worker threads an SDK process of Dataflow's gets from --memory-budget
# when number_of_worker_harness_threads is not set: with an SDK process
# per vCPU, one thread computes a batch while a second reads and decodes
# the next; more only hold more batches (run_configs/dataflow.yaml sets 2).
DATAFLOW_MOST_THREADS = 2


def runner_workers(beam_flags: Sequence[str],
                   taskmanager_slots: Optional[Callable[[str], int]] = None
                   ) -> memory_plan.Workers:
  """Where the runner of ``beam_flags`` puts its worker processes, for
  ``--memory-budget`` (``memory_plan`` says how each runner counts).

  Args:
    beam_flags: The run's Beam options.
    taskmanager_slots: Reads a Flink cluster's slots per TaskManager from
      its REST address (a seam for tests; ``flink_taskmanager_slots``).

  Raises:
    ValueError: options that leave the workers' threads unknown, or a
      runner the planner does not know.
  """
  from apache_beam.options.pipeline_options import (PipelineOptions,
                                                    StandardOptions)
  options = PipelineOptions(list(beam_flags))
  runner = (options.view_as(StandardOptions).runner or
            'DirectRunner').rsplit('.', 1)[-1]
  if runner in LOCAL_RUNNERS:
    return _local(options)
  if runner in ('DataflowRunner', 'TestDataflowRunner'):
    return _dataflow(options)
  if runner in ('PortableRunner', 'FlinkRunner'):
    return _flink(options, taskmanager_slots or flink_taskmanager_slots)
  raise ValueError(f'--memory-budget plans local, Dataflow and Flink runs, '
                   f'not {runner}')


def _local(options) -> memory_plan.Workers:
  """This machine's: processes or threads of the local runner."""
  from apache_beam.options.pipeline_options import DirectOptions
  processes, threads = local_workers(options)
  direct = options.view_as(DirectOptions)
  # direct_num_workers 0 is Beam's "one per core": the planner picks how
  # many of those fit.
  most = (os.cpu_count() or 1) if direct.direct_num_workers == 0 else 0
  mode = direct.direct_running_mode
  return memory_plan.Workers(
      'this machine', processes, threads, memory_plan.machine_memory(),
      processes_flag=('direct_num_workers'
                      if mode == 'multi_processing' else ''),
      threads_flag=('direct_num_workers'
                    if mode == 'multi_threading' else ''),
      most_processes=most if mode == 'multi_processing' else 0,
      most_threads=most if mode == 'multi_threading' else 0)


def _dataflow(options) -> memory_plan.Workers:
  """A Dataflow VM's: an SDK process per vCPU, its harness threads."""
  from apache_beam.options.pipeline_options import (DebugOptions,
                                                    WorkerOptions)
  debug = options.view_as(DebugOptions)
  threads = debug.number_of_worker_harness_threads
  machine = options.view_as(WorkerOptions).machine_type
  if not machine:
    raise ValueError('--memory-budget on Dataflow: set machine_type, whose '
                     'memory the plan divides')
  vcpus, memory = memory_plan.machine_type_size(machine)
  # Dataflow starts an SDK process per vCPU, or one per VM with this
  # experiment.
  one = debug.lookup_experiment('no_use_multiple_sdk_containers')
  return memory_plan.Workers(
      f'Dataflow {machine}', 1 if one else vcpus, threads or 1, memory,
      memory_plan.DATAFLOW_RESERVED_BYTES,
      threads_flag='number_of_worker_harness_threads',
      most_threads=0 if threads else DATAFLOW_MOST_THREADS)


def _flink(options, taskmanager_slots: Callable[[str], int]
           ) -> memory_plan.Workers:
  """A Flink TaskManager's: its SDK worker processes, its slots' threads."""
  from apache_beam.options.pipeline_options import (FlinkRunnerOptions,
                                                    PortableOptions)
  processes = int(options.view_as(PortableOptions).sdk_worker_parallelism
                  or 0)
  if not processes:
    raise ValueError('--memory-budget on Flink: set sdk_worker_parallelism '
                     '(SDK worker processes per TaskManager)')
  rest = options.view_as(FlinkRunnerOptions).flink_master
  if not rest or rest == '[auto]':
    raise ValueError('--memory-budget on Flink: set flink_master to the '
                     'cluster\'s REST address (host:8081), where the '
                     'TaskManagers\' slots are read')
  slots = taskmanager_slots(rest)
  threads = max(1, -(-slots // processes))
  return memory_plan.Workers(
      f'Flink at {rest}, {slots} slot(s) a TaskManager', processes, threads,
      processes_flag='sdk_worker_parallelism',
      why_unknown='on Flink the launcher cannot see the worker pool\'s '
      'memory limit')


def flink_taskmanager_slots(rest: str, timeout_s: float = 10) -> int:
  """The most task slots of any TaskManager of the Flink cluster whose REST
  API is at ``rest`` (``host:port`` or a URL): Flink's ``/taskmanagers``.

  Raises:
    ValueError: the API cannot be reached or lists no TaskManager.
  """
  # pylint: disable-next=import-outside-toplevel
  from pipeline.runners.flink_local import cluster
  url = rest if '://' in rest else f'http://{rest}'
  try:
    answer = cluster.rest_at(url, '/taskmanagers', timeout=timeout_s)
  except ValueError as e:  # not JSON
    answer, why = None, str(e)
  else:
    why = 'no answer'
  if answer is None:
    raise ValueError(f'--memory-budget on Flink: cannot read the '
                     f'TaskManagers from {url}/taskmanagers ({why})')
  listed = answer.get('taskmanagers') or []
  slots = [int(t.get('slotsNumber') or 0) for t in listed]
  if not slots or max(slots) < 1:
    raise ValueError(f'--memory-budget on Flink: {url} lists no TaskManager '
                     'with slots yet')
  return max(slots)
