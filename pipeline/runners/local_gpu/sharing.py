"""How a local run's worker processes share this machine and its GPUs.

``for_run`` is the launcher's one step for a local ``--device gpu`` run:
it tells the worker processes how many of them share the machine and
each GPU, spreads them over several GPUs and starts NVIDIA MPS for those
that share one. Every setting reaches the workers through the
environment they inherit from the launcher (``transforms/extract/
backend.py`` and ``transforms/extract/gpu/gpu_slot.py`` read it), so a
``featurize run`` and a ``featurize refresh`` of the same layout give
their workers the same.
"""
import contextlib
import os
from typing import Callable, Iterator, Optional

from pipeline.runners.local_gpu import mps, placement
from transforms.extract import backend


def share_gpus(processes: int, one_owner: bool = False,
               per_gpu: Optional[int] = None) -> None:
  """Tells the worker processes this launcher starts how many of them
  share the machine and each GPU (they inherit the environment), for
  their shares of its cores, and gives each process that uses a GPU its
  share of JAX's memory unless the user chose one.

  Args:
    processes: Worker processes the runner starts.
    one_owner: One server process owns the GPUs (``--large-model``): it
      takes one process's share of their memory.
    per_gpu: Worker processes on each GPU where they are spread over
      several (``placement``); all of them otherwise.
  """
  processes = max(1, processes)
  sharing = 1 if one_owner else max(1, per_gpu or processes)
  os.environ[backend.WORKER_PROCESSES_ENV] = str(processes)
  os.environ[backend.GPU_PROCESSES_ENV] = str(sharing)
  if (backend.MEMORY_FRACTION_ENV not in os.environ or
      os.environ.get(backend.MEMORY_FRACTION_DEFAULTED_ENV)):
    os.environ[backend.MEMORY_FRACTION_ENV] = str(
        backend.memory_fraction(sharing))
    os.environ[backend.MEMORY_FRACTION_DEFAULTED_ENV] = '1'


@contextlib.contextmanager
def for_run(processes: int, large_model: bool,
            say: Callable[[str], None]) -> Iterator[None]:
  """Runs the body (the local runner's whole job) with this machine set
  up for ``processes`` worker processes on its GPUs: the shares in the
  environment they inherit, spread over several GPUs, sharing one through
  MPS (stopped when the body ends).

  Args:
    processes: The worker processes the local runner starts.
    large_model: One server process owns every GPU (``--large-model``):
      nothing is spread and MPS is not needed.
    say: Prints a line for the user (what was set up, and why not).
  """
  gpus = [] if large_model else placement.machine_gpus(os.environ)
  # Several GPUs: each worker process takes one, P/G a GPU.
  per_gpu = placement.processes_per_gpu(processes, len(gpus))
  share_gpus(processes, one_owner=large_model, per_gpu=per_gpu)
  if large_model:
    yield
    return
  if len(gpus) > 1 and processes > 1:
    say(f'{processes} worker processes over {len(gpus)} GPUs, at most '
        f'{per_gpu} a GPU')
  with placement.spread(gpus), mps.sharing(per_gpu, say=say):
    yield
