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
import os
import sys
import threading
from concurrent import futures
from typing import Any, List

from transforms.decode import imaging
from transforms.extract import backend
from transforms.extract import vgg16
from transforms.extract.gpu import decoders
from transforms.extract.gpu.device_model import DeviceModel, visible_devices

# How often a thread waiting for the GIL may take it (seconds; Python's
# default is 0.005). nvJPEG's batched decode gives the GIL up and takes it
# back many times a batch, and each time waits for a Python-busy thread
# (the bundle's) to reach its switch interval: on an H200 it decoded
# 12,538 images/s alone but 207 beside one busy thread at 0.005, 2,158 at
# 0.0005 and 5,666 at 0.0001, where the busy thread kept 97% of its own
# speed (benchmarks/results/gpu/run8-switch-interval.txt). Set once per
# process that decodes on a GPU.
SWITCH_INTERVAL_S = 0.0001
SWITCH_INTERVAL_ENV = 'FEATURIZE_GPU_SWITCH_INTERVAL_S'
# How a host thread waits for the GPU: CUDA's default spins on a core
# while a process has fewer contexts than the machine has cores. With 8
# processes sharing one H200 the helper threads took 125 ms of CPU a
# batch in nvJPEG's call for 194 ms of wall time (RESULTS.md, run 19);
# with blocking waits really taken it was still 108 ms (nvJPEG's own
# work, not a spin), 2.4 cores were freed and the rate did not rise (run
# 20). So CUDA's choice stays the default.
# "spin", "yield" or "blocking" here sets the flag of every visible
# GPU's primary context, the one JAX, torch and nvJPEG share, once they
# have made it; unset leaves CUDA's choice. A benchmark seam.
CUDA_SCHEDULE_ENV = 'FEATURIZE_CUDA_SCHEDULE'
_CU_CTX_SCHED = {'auto': 0, 'spin': 1, 'yield': 2, 'blocking': 4}
_CU_CTX_SCHED_MASK = 0x7


def schedule_flag(schedule: str) -> int:
  """CUDA's context flag for a ``CUDA_SCHEDULE_ENV`` value (ValueError for
  another)."""
  flag = _CU_CTX_SCHED.get(schedule)
  if flag is None:
    raise ValueError(f'{CUDA_SCHEDULE_ENV} must be one of '
                     f'{sorted(_CU_CTX_SCHED)}, not {schedule!r}')
  return flag


def set_cuda_schedule(schedule: str) -> bool:
  """Sets every visible GPU's primary-context scheduling flag through the
  driver API (no framework exposes it); True where the driver took it,
  read back.

  Call it after JAX has made its contexts: XLA sets the flags of a
  primary context that is not yet active to its own (CUDA's default), so
  a flag set before it would be lost; ``cuCtxSetFlags`` (CUDA 12.1)
  changes those of an active one.

  Raises ValueError for an unknown name; a machine without CUDA's driver,
  or with one older than 12.1, gives False.
  """
  flag = schedule_flag(schedule)
  import ctypes  # pylint: disable=import-outside-toplevel
  try:
    cuda = ctypes.CDLL('libcuda.so.1')
    set_flags, get_flags = cuda.cuCtxSetFlags, cuda.cuCtxGetFlags
  except (OSError, AttributeError):
    return False
  count = ctypes.c_int(0)
  if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
    return False
  done = count.value > 0
  for index in range(count.value):
    device, context = ctypes.c_int(0), ctypes.c_void_p()
    if (cuda.cuDeviceGet(ctypes.byref(device), index) != 0 or
        cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), device) != 0):
      done = False
      continue
    got = ctypes.c_uint(0)
    if cuda.cuCtxPushCurrent_v2(context) == 0:
      done &= (set_flags(ctypes.c_uint(flag)) == 0 and
               get_flags(ctypes.byref(got)) == 0 and
               got.value & _CU_CTX_SCHED_MASK == flag)
      cuda.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
    else:
      done = False
    cuda.cuDevicePrimaryCtxRelease_v2(device)
  return bool(done)


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


def load_runtime(model_config: vgg16.ModelConfig,
                 decode_config: imaging.DecodeConfig) -> DeviceRuntime:
  """Builds the model on every visible GPU and a decoder for each."""
  sys.setswitchinterval(float(os.environ.get(SWITCH_INTERVAL_ENV,
                                             SWITCH_INTERVAL_S)))
  on_cpu = backend.on_cpu_stand_in()
  schedule = os.environ.get(CUDA_SCHEDULE_ENV)
  if schedule:
    schedule_flag(schedule)  # an unknown name fails before the model loads
  devices = visible_devices(on_cpu)  # JAX makes the contexts here
  if schedule and not on_cpu:
    if set_cuda_schedule(schedule):
      logging.info('%s=%s: taken by the GPUs\' contexts', CUDA_SCHEDULE_ENV,
                   schedule)
    else:
      logging.warning('%s=%s: the CUDA driver did not take it',
                      CUDA_SCHEDULE_ENV, schedule)
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
  """A process's CPU-decoder threads, and how many decodes they hold.

  Pillow releases the GIL while it decodes and resizes, so the threads
  decode in parallel. ``has_room`` tells the router whether one more
  large JPEG can go to them (``routing.route``): while fewer decodes are
  queued or running than ``ROOM_PER_THREAD`` a thread, the threads stay
  busy and none waits long.
  """
  # Decodes per thread, running or queued, below which large JPEGs are
  # welcome: one running and one waiting keeps each thread busy.
  ROOM_PER_THREAD = 2

  def __init__(self, threads: int):
    self.threads = threads
    self._pool = futures.ThreadPoolExecutor(
        threads, thread_name_prefix='featurize-cpu-decode',
        initializer=name_thread, initargs=('fz-cpu-decode',))
    self._lock = threading.Lock()
    self._held = 0

  def submit(self, function, *args) -> futures.Future:
    """Runs ``function(*args)`` on a decoder thread."""
    with self._lock:
      self._held += 1
    future = self._pool.submit(function, *args)
    future.add_done_callback(self._release)
    return future

  def _release(self, _) -> None:
    with self._lock:
      self._held -= 1

  @property
  def held(self) -> int:
    """Decodes queued or running now."""
    return self._held

  def has_room(self) -> bool:
    """Whether a large JPEG may go to these threads now."""
    return self._held < self.ROOM_PER_THREAD * self.threads

  def shutdown(self, wait: bool = True) -> None:
    self._pool.shutdown(wait=wait)


@functools.lru_cache(maxsize=None)
def cpu_decoders() -> CpuDecoders:
  """This process's CPU-decoder threads (made once); the process takes
  its share of the machine's cores."""
  threads = backend.cpu_decode_threads()
  logging.info('GPU path: %d CPU decoder thread(s) in this process', threads)
  return CpuDecoders(threads)
