"""What the GPU path holds per process: the model, its decoders, and the
CPU decoder's threads.

``load_runtime`` builds the model on every visible GPU and an nvJPEG
decoder for each; the process that runs them is a Beam worker process
(one runtime per process, through Beam's ``shared.Shared``) or, with
``--large-model``, one server process per machine (``server``).
``cpu_decoders`` is the process's pool of CPU-decoder threads, in every
worker process either way.
"""
import dataclasses
import functools
import itertools
import logging
import sys
import threading
from concurrent import futures
from typing import Any, List

from transforms.decode import imaging
from transforms.extract import backend, models
from transforms.extract.gpu import decoders
from transforms.extract.gpu.device_model import DeviceModel, visible_devices


@dataclasses.dataclass
class DeviceRuntime:
  """What one process shares between its threads: the model and a
  decoder per GPU."""
  model: DeviceModel
  decoders: List[Any]
  _turns: Any = dataclasses.field(default_factory=itertools.count)
  _lock: Any = dataclasses.field(default_factory=threading.Lock)

  def next_replica(self) -> int:
    with self._lock:
      return next(self._turns) % len(self.decoders)


def load_runtime(model_config: models.ModelConfig,
                 decode_config: imaging.DecodeConfig) -> DeviceRuntime:
  """Builds the model on every visible GPU and a decoder for each."""
  # nvJPEG's batched decode gives the GIL up and takes it back many times
  # a batch (``settings.GpuSettings.switch_interval_s``).
  sys.setswitchinterval(model_config.gpu.switch_interval_s)
  on_cpu = backend.on_cpu_stand_in()
  devices = visible_devices(on_cpu)
  model = DeviceModel(model_config, devices)
  made = [decoders.make_decoder(index, decode_config, model.batch_size,
                                 on_cpu, device)
          for index, device in enumerate(devices)]
  return DeviceRuntime(model, made)


def name_thread(name: str) -> None:
  """Gives the calling thread ``name`` (15 bytes at most) where the
  system shows thread names (``top -H``, ``/proc/<pid>/task``), so that
  the host's cores can be told apart by use; a thread pool's
  ``initializer``. Python names its threads for itself only. The main
  thread keeps its name: the system shows it as the process's."""
  if threading.current_thread() is threading.main_thread():
    return
  try:
    import ctypes  # pylint: disable=import-outside-toplevel
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
  except (OSError, AttributeError):
    pass  # not Linux: names are only a help


class CpuDecoders:
  """A process's CPU-decoder threads. Pillow releases the GIL while it
  decodes and resizes, so the threads decode in parallel."""

  def __init__(self, threads: int):
    self.threads = threads
    self._pool = futures.ThreadPoolExecutor(
        threads, thread_name_prefix='featurize-cpu-decode',
        initializer=name_thread, initargs=('fz-cpu-decode',))

  def submit(self, function, *args) -> futures.Future:
    """Runs ``function(*args)`` on a decoder thread."""
    return self._pool.submit(function, *args)

  def shutdown(self, wait: bool = True) -> None:
    self._pool.shutdown(wait=wait)


@functools.lru_cache(maxsize=None)
def cpu_decoders(threads: int = 0) -> CpuDecoders:
  """This process's CPU-decoder threads, made once: ``threads`` of them,
  or with 0 the process's share of the machine's cores."""
  threads = threads or backend.cpu_decode_threads()
  logging.info('GPU path: %d CPU decoder thread(s) in this process', threads)
  return CpuDecoders(threads)
