"""Which GPU a worker process of a local run takes, when the launcher
spreads the run's processes over several GPUs.

The launcher (``pipeline/runners/local_gpu/placement.py``) does not start
the worker processes itself (Beam's local runner does) and cannot give
each its own environment, so it names the GPUs to spread over and a slot
folder in the environment the workers inherit (``GPUS_ENV``,
``SLOTS_ENV``). A worker process places itself when it first loads the
model, before CUDA starts in it (``place_this_process``): it claims the
first free slot of the run's P (a file locked with ``flock`` for the life
of the process, so a worker that dies frees its slot for the one Beam
starts instead), and slot k takes GPU k mod G through
``CUDA_VISIBLE_DEVICES`` (with fewer processes than GPUs, every P-th GPU
from k, so that each GPU has a process, as one process holds a replica
on each GPU). Nothing here imports CUDA.
"""
import fcntl
import logging
import os
from typing import IO, List, MutableMapping, Optional, Tuple

# Set by the launcher for the workers: the GPUs to spread over ('0,1,...',
# as CUDA_VISIBLE_DEVICES names them), and the folder of the run's slots.
GPUS_ENV = 'FEATURIZE_GPU_SPREAD'
SLOTS_ENV = 'FEATURIZE_GPU_SLOTS'
VISIBLE_ENV = 'CUDA_VISIBLE_DEVICES'

# This process's claim: the open, locked slot file (kept open for the life
# of the process: closing it would free the slot) and the GPU it gave.
_placed: dict = {}

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
