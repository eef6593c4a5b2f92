"""Worker processes that share a GPU run their models there in turn.

Under MPS, the kernels of every worker process run on the GPU together.
That is what lets nvJPEG decode in some processes while the model runs in
another, but it also lets 8 processes' models fill every multiprocessor
at once, so that nvJPEG's own kernels wait behind them. Measured apart on
an H200 (RESULTS.md run 16, ``components.py --beside-model``): nvJPEG in
8 processes decoded 14,392 images/s beside the model in 1 process (which
kept 16,273, 0.97 of its ceiling), but 6,975 beside the model in 8.

So, where several worker processes share a GPU, each takes a turn for
its model call: it holds the GPU's turn while the model runs on one batch
and waits for it, and the other processes' decoders and resizes run
beside it meanwhile. Only one model runs on a GPU at a time, which keeps
the GPU as busy with the model as one process would (the next process's
call is ready when the turn passes), and nvJPEG has the room it had
beside one model process.

A turn is an exclusive ``flock`` on a file per GPU in the machine's
temporary folder: the kernel queues the waiters, a waiter spends no CPU,
and a process that dies releases its turn with its file. Beam, JAX and
MPS have no such machine-wide lock between processes, hence this module.
Threads of one process take the process's own lock first (``flock``
holds for an open file, not a thread).
"""
import contextlib
import fcntl
import os
import tempfile
import threading
from typing import Dict, Iterator, Optional

# "1" turns them on where several processes share a GPU, "0" off. Off by
# default until measured end to end. A benchmark seam.
TURNS_ENV = 'FEATURIZE_GPU_MODEL_TURNS'
DEFAULT = False


def wanted(processes: int, environ=os.environ) -> bool:
  """Whether worker processes take turns: where more than one process
  shares each GPU, and ``TURNS_ENV`` (``DEFAULT`` if unset) says so."""
  given = environ.get(TURNS_ENV, '').strip()
  return processes > 1 and (given == '1' if given in ('0', '1')
                            else DEFAULT)


def lock_path(device_index: int, folder: Optional[str] = None) -> str:
  """The file whose lock is GPU ``device_index``'s turn."""
  return os.path.join(folder or tempfile.gettempdir(),
                      f'featurize-gpu{device_index}-model-turn.lock')


class Turns:
  """The GPUs' turns, as this process takes them.

  Args:
    folder: Where the lock files live (the machine's temporary folder);
      every process that shares a GPU must use the same one.
  """

  def __init__(self, folder: Optional[str] = None):
    self._folder = folder
    self._files: Dict[int, int] = {}
    self._locks: Dict[int, threading.Lock] = {}
    self._guard = threading.Lock()

  def _of(self, device_index: int):
    with self._guard:
      if device_index not in self._files:
        self._files[device_index] = os.open(
            lock_path(device_index, self._folder),
            os.O_RDWR | os.O_CREAT, 0o666)
        self._locks[device_index] = threading.Lock()
      return self._files[device_index], self._locks[device_index]

  @contextlib.contextmanager
  def turn(self, device_index: int) -> Iterator[None]:
    """Holds GPU ``device_index``'s turn for the body (waits for it)."""
    fd, lock = self._of(device_index)
    with lock:
      fcntl.flock(fd, fcntl.LOCK_EX)
      try:
        yield
      finally:
        fcntl.flock(fd, fcntl.LOCK_UN)

  def close(self) -> None:
    with self._guard:
      for fd in self._files.values():
        os.close(fd)
      self._files.clear()
      self._locks.clear()


class TakingTurns:
  """A ``device_model.DeviceModel`` whose calls take the GPU's turn.

  Called like the model, it waits for the batch's pixels (the resize
  before it), takes the turn of the replica's GPU, starts the model and
  waits for it, then gives the turn up; it returns the finished outputs.

  Args:
    model: The ``DeviceModel``.
    turns: This process's ``Turns``.
    device_indices: The CUDA index of each replica's GPU.
  """

  def __init__(self, model, turns: Turns, device_indices):
    self._model = model
    self._turns = turns
    self._indices = list(device_indices)
    import jax  # pylint: disable=import-outside-toplevel
    self._ready = jax.block_until_ready

  def __getattr__(self, name):
    return getattr(self._model, name)  # batch_size, config, devices

  def __call__(self, pixels, replica: int):
    pixels = self._ready(pixels)
    with self._turns.turn(self._indices[replica]):
      return self._ready(self._model(pixels, replica))
