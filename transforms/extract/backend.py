"""Which Keras backend runs VGG16, chosen per device before Keras loads.

Keras reads ``KERAS_BACKEND`` once, at its first import, for the whole
process. The CPU path runs on TensorFlow (oneDNN is the fastest CPU path
measured here); the GPU path runs on JAX, whose XLA kernels were the
fastest of the Keras backends on the H200 (docs/GPU_GROUNDWORK.md). So
every process that builds a model, launcher and workers alike, calls
``select`` first; Beam's local workers inherit the environment, and the
GPU worker image sets it too.
"""
import importlib.metadata
import os
import sys

BACKENDS = {'cpu': 'tensorflow', 'gpu': 'jax'}
DEVICES = tuple(BACKENDS)

# Test seam: runs the GPU path's own code (screening, batching, fallback,
# the jitted JAX model) on JAX's CPU device, with a Pillow stand-in for
# nvJPEG, so that CI machines without a GPU exercise it. Never set in use.
ON_CPU_ENV = 'FEATURIZE_GPU_PATH_ON_CPU'

# How many worker processes share each GPU, and how many the machine
# runs: the launcher sets them for a local multi-process run
# (``pipeline/runners/local_gpu/sharing.py``), and worker processes
# inherit them. Each process takes its share of its GPU's memory and of
# the machine's cores.
GPU_PROCESSES_ENV = 'FEATURIZE_GPU_PROCESSES'
WORKER_PROCESSES_ENV = 'FEATURIZE_WORKER_PROCESSES'
# JAX's memory pool: at most this share of each GPU for one process, and
# this share for all the processes that share a GPU together (torch's
# nvJPEG buffers and the decoded pixels take the rest).
_ONE_PROCESS_MEMORY_FRACTION = 0.4
_ALL_PROCESSES_MEMORY_FRACTION = 0.8
MEMORY_FRACTION_ENV = 'XLA_PYTHON_CLIENT_MEM_FRACTION'
# Set beside it where featurize chose the fraction, not the user.
MEMORY_FRACTION_DEFAULTED_ENV = 'FEATURIZE_JAX_MEMORY_FRACTION_DEFAULTED'
# JAX's persistent compilation cache (its own option, read from the
# environment): where each process finds the compiled, autotuned model
# that an earlier process or run left, instead of compiling it again.
# Set it to '' to turn the cache off.
COMPILATION_CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'


def compilation_cache_dir() -> str:
  """``$XDG_CACHE_HOME/featurize/jax`` (``~/.cache`` by default)."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'featurize', 'jax')


def on_cpu_stand_in() -> bool:
  """Whether the GPU path runs on JAX's CPU device (tests only)."""
  return bool(os.environ.get(ON_CPU_ENV))


def gpu_processes() -> int:
  """How many processes share each GPU (``GPU_PROCESSES_ENV``; 1)."""
  try:
    return max(1, int(os.environ.get(GPU_PROCESSES_ENV, '1')))
  except ValueError:
    return 1


def worker_processes() -> int:
  """How many worker processes the machine runs (``WORKER_PROCESSES_ENV``;
  else as many as share a GPU)."""
  try:
    return max(1, int(os.environ[WORKER_PROCESSES_ENV]))
  except (KeyError, ValueError):
    return gpu_processes()


def memory_fraction(processes: int) -> float:
  """JAX's cap on one process's share of a GPU's memory."""
  return round(min(_ONE_PROCESS_MEMORY_FRACTION,
                   _ALL_PROCESSES_MEMORY_FRACTION / max(1, processes)), 3)


def cpu_decode_threads(cores: int = 0, processes: int = 0) -> int:
  """Threads of one process's CPU decoder where the GPU settings leave
  it to featurize: the process's share of the machine's cores (at least
  1)."""
  cores = cores or len(os.sched_getaffinity(0))
  return max(1, cores // (processes or worker_processes()))


def _jax_environment() -> None:
  """Settings JAX reads once, when it starts; set only where unset."""
  # Several processes, and nvJPEG's own buffers in torch, share a GPU:
  # JAX takes memory as it needs it instead of 75% of the GPU up front,
  # and at most 40% of it (one process) or its share of 80% (several):
  # left alone, its pool grew to 77 GB (bfloat16) and 135 GB (float32) of
  # the H200 in the benchmark, most of it cuDNN autotuning workspace kept
  # for reuse.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  if MEMORY_FRACTION_ENV not in os.environ:
    os.environ[MEMORY_FRACTION_ENV] = str(memory_fraction(gpu_processes()))
    # Ours, not the user's: share_gpus may replace it.
    os.environ[MEMORY_FRACTION_DEFAULTED_ENV] = '1'
  if not on_cpu_stand_in():
    # Several worker processes start at once, and each would compile
    # VGG16 with cuDNN's autotuning on shared cores, so that their first
    # batches start seconds apart while each has a fixed share of the
    # input to do. With the cache, a process that starts after another
    # compiled the model, and every later run (a scheduled refresh),
    # loads the program instead.
    if COMPILATION_CACHE_ENV not in os.environ:
      folder = compilation_cache_dir()
      try:
        os.makedirs(folder, exist_ok=True)
      except OSError:  # a read-only home: run without the cache
        folder = ''
      os.environ[COMPILATION_CACHE_ENV] = folder
  else:
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
    if _jaxlib_at_least((0, 11)):
      # XLA:CPU's YNNPACK fusions give NaNs in bfloat16 convolutions in
      # jaxlib 0.11 and 0.12 (docs/GPU_GROUNDWORK.md); 0.10 has neither
      # the bug nor the flag (an unknown XLA flag is fatal).
      flags = os.environ.get('XLA_FLAGS', '')
      if 'ynn_fusion_type' not in flags:
        os.environ['XLA_FLAGS'] = (
            flags + ' --xla_cpu_experimental_ynn_fusion_type=').strip()


def _jaxlib_at_least(version) -> bool:
  try:
    found = importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return False
  parts = tuple(int(p) for p in found.split('.')[:2] if p.isdigit())
  return parts >= tuple(version)


def select(device: str) -> str:
  """Sets the Keras backend for ``device``; returns its name.

  Raises:
    ValueError: an unknown device.
    RuntimeError: Keras is already loaded on another backend in this
      process (it cannot switch).
  """
  if device not in DEVICES:
    raise ValueError(f'device must be one of {DEVICES}, not {device!r}')
  wanted = BACKENDS[device]
  if 'keras' in sys.modules:
    import keras  # pylint: disable=import-outside-toplevel
    current = keras.backend.backend()
    if current != wanted:
      raise RuntimeError(
          f'--device {device} needs Keras on {wanted}, but this process '
          f'already loaded Keras on {current} (KERAS_BACKEND is read once '
          'per process)')
    return wanted
  os.environ['KERAS_BACKEND'] = wanted
  if wanted == 'jax':
    _jax_environment()
  return wanted
