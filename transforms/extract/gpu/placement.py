"""Which GPU each worker process of a machine uses.

With one GPU, every worker process uses it: they share it through NVIDIA
MPS (``mps``), each with its share of the GPU's memory. With several GPUs,
each worker process uses one of them, the processes spread evenly (P/G a
GPU), and each GPU is shared by its own processes as one GPU is. That way
every GPU is fed as one GPU is: its processes bring their own readers,
CPU decoders and nvJPEG decoders, and no process switches its batches
between GPUs.

The launcher does not start the worker processes itself (Beam's local
runner does) and cannot give each its own environment, so a worker
process places itself, when it first loads the model and before CUDA
starts in it (``place_this_process``): it claims the first free slot of
the run's P (a file locked with ``flock`` for the life of the process, so
a worker that dies frees its slot for the one Beam starts instead), and
slot k takes GPU k mod G through ``CUDA_VISIBLE_DEVICES`` (with fewer
processes than GPUs, every P-th GPU from k, so that each GPU has a
process, as one process holds a replica on each GPU). The launcher
says how (``spread``): the GPUs to spread over and the slot folder, in
the environment the workers inherit.

``--large-model`` keeps one server process owning every GPU (a replica
on each, batches in turn), and Dataflow's one SDK process per GPU VM does
the same; neither is spread. Nothing here imports CUDA.
"""
import contextlib
import fcntl
import logging
import math
import os
import shutil
import tempfile
from typing import (IO, Callable, Iterator, List, Mapping, MutableMapping,
                    Optional, Tuple)

# Set by the launcher for the workers: the GPUs to spread over ('0,1,...',
# as CUDA_VISIBLE_DEVICES names them), and the folder of the run's slots.
GPUS_ENV = 'FEATURIZE_GPU_SPREAD'
SLOTS_ENV = 'FEATURIZE_GPU_SLOTS'
VISIBLE_ENV = 'CUDA_VISIBLE_DEVICES'
# Where the NVIDIA driver lists the machine's GPUs, one folder each.
DRIVER_GPUS = '/proc/driver/nvidia/gpus'

# This process's claim: the open, locked slot file (kept open for the life
# of the process: closing it would free the slot) and the GPU it gave.
_placed: dict = {}


def machine_gpus(environ: Mapping[str, str],
                 listdir: Callable[[str], List[str]] = os.listdir
                 ) -> List[str]:
  """The GPUs the launcher may spread workers over, as
  ``CUDA_VISIBLE_DEVICES`` names them: those it already names, else one
  per GPU the NVIDIA driver lists (``0``..``G-1``), else none."""
  visible = environ.get(VISIBLE_ENV)
  if visible is not None:
    return [name.strip() for name in visible.split(',') if name.strip()]
  try:
    count = len(listdir(DRIVER_GPUS))
  except OSError:
    return []
  return [str(index) for index in range(count)]


def processes_per_gpu(processes: int, gpus: int) -> int:
  """The most worker processes any one GPU gets (each takes that share of
  its GPU's memory)."""
  return max(1, math.ceil(max(1, processes) / max(1, gpus)))


def gpus_of_slot(slot: int, processes: int, gpus: List[str]) -> List[str]:
  """The GPUs of slot ``slot`` of ``processes``: with at least as many
  processes as GPUs, one, round robin (P/G a GPU); with fewer, every
  P-th GPU from the slot's own, so that no GPU is left out (a process
  keeps a replica on each of its GPUs, as one process does on all)."""
  if processes >= len(gpus):
    return [gpus[slot % len(gpus)]]
  return gpus[slot % processes::processes]


def claim_slot(folder: str, slots: int) -> Optional[Tuple[int, IO]]:
  """Claims the first free of ``slots`` slots in ``folder``: an exclusive
  ``flock`` on its file, held while the returned file stays open (until
  the process ends, for ``place_this_process``). Returns the slot and the
  file, or None when every slot is held."""
  for slot in range(slots):
    handle = open(os.path.join(folder, f'slot-{slot}'), 'a')
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      handle.close()
      continue
    return slot, handle
  return None


def place_this_process(processes: int,
                       environ: MutableMapping[str, str] = os.environ
                       ) -> Optional[str]:
  """Gives this worker process its GPU of the launcher's spread (its GPUs,
  with fewer processes than GPUs: ``gpus_of_slot``), before CUDA starts in
  it; returns them as ``CUDA_VISIBLE_DEVICES`` now names them, or None
  where there is nothing to spread (one GPU, ``--large-model``, another
  runner). Calls after the first return the first's choice.

  Args:
    processes: The run's worker processes on this machine (its slots).
    environ: The environment to read and to narrow (``os.environ``).
  """
  if 'gpu' in _placed:
    return _placed['gpu']
  gpus = [g for g in environ.get(GPUS_ENV, '').split(',') if g]
  folder = environ.get(SLOTS_ENV)
  if len(gpus) < 2 or not folder:
    return None
  processes = max(1, processes)
  claimed = claim_slot(folder, processes)
  if claimed is not None:
    slot, _placed['handle'] = claimed  # open: the claim lasts
  else:  # more processes than slots: spread by process id
    slot = os.getpid()
    logging.warning('every GPU slot is held; process %d spreads by its id',
                    slot)
  chosen = ','.join(gpus_of_slot(slot, processes, gpus))
  environ[VISIBLE_ENV] = chosen
  _placed['gpu'] = chosen
  logging.info('worker process %d: slot %d, GPU(s) %s', os.getpid(), slot,
               chosen)
  return chosen


@contextlib.contextmanager
def spread(gpus: List[str],
           environ: MutableMapping[str, str] = os.environ) -> Iterator[None]:
  """Runs the body with the worker processes it starts spread over
  ``gpus`` (two or more; with fewer, nothing changes): the GPUs and a new
  slot folder in ``environ``, both removed afterwards."""
  if len(gpus) < 2:
    yield
    return
  folder = tempfile.mkdtemp(prefix='featurize-gpu-slots-')
  saved = {name: environ.get(name) for name in (GPUS_ENV, SLOTS_ENV)}
  environ[GPUS_ENV] = ','.join(gpus)
  environ[SLOTS_ENV] = folder
  try:
    yield
  finally:
    for name, value in saved.items():
      if value is None:
        environ.pop(name, None)
      else:
        environ[name] = value
    shutil.rmtree(folder, ignore_errors=True)
