"""Spreading a local run's worker processes over this machine's GPUs.

With one GPU, every worker process uses it: they share it through NVIDIA
MPS (``mps``), each with its share of the GPU's memory. With several GPUs,
each worker process uses one of them, the processes spread evenly (P/G a
GPU), and each GPU is shared by its own processes as one GPU is. That way
every GPU is fed as one GPU is: its processes bring their own readers,
CPU decoders and nvJPEG decoders, and no process switches its batches
between GPUs.

``spread`` names the GPUs and a slot folder in the environment the worker
processes inherit; each worker takes its GPU from them
(``transforms/extract/gpu/gpu_slot.py``). ``--large-model`` keeps one
server process owning every GPU (a replica on each, batches in turn), and
Dataflow's one SDK process per GPU VM does the same; neither is spread.
Nothing here imports CUDA.
"""
import contextlib
import math
import os
import shutil
import tempfile
from typing import Callable, Iterator, List, Mapping, MutableMapping

from transforms.extract.gpu.gpu_slot import GPUS_ENV, SLOTS_ENV, VISIBLE_ENV

# Where the NVIDIA driver lists the machine's GPUs, one folder each.
DRIVER_GPUS = '/proc/driver/nvidia/gpus'


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
