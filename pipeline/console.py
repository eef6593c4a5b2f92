"""What a person at the terminal sees: a quiet start, one line per
failure, and exit statuses that say what kind of failure it was.

    0  the job finished (or was submitted, with --no-wait)
    1  refused, nothing done: the output holds a finished run, another job
       holds its lock, or a dataset moved on under a refresh
    2  usage: bad flags, an input pattern that matches nothing, a weight
       file that is missing or not HDF5 (argparse's own status too)
    3  too many bad images: more failed than --max-error-fraction allows
       (the manifest and the error lines are written; _SUCCESS is not)
    4  the job failed: the runner, a worker, storage (a full disk, ...)
"""
import logging
import os
from typing import Dict, Optional, Type

from pipeline.refresh.versions import PointerMoved
from pipeline.launch import JobFailed
from transforms.coordination.output_lock import Locked
from transforms.extract import backend
from transforms.extract import quiet_import
from pipeline.runners.local_gpu import mps
from transforms.extract.models import ModelConfig
from transforms.write.output_files import RunRefused, TooManyErrors

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_TOO_MANY_ERRORS = 3
EXIT_FAILED = 4

# Checked in order: FileNotFoundError before OSError, its base class.
EXIT_STATUSES: Dict[Type[BaseException], int] = {
    RunRefused: EXIT_REFUSED,
    Locked: EXIT_REFUSED,
    PointerMoved: EXIT_REFUSED,
    TooManyErrors: EXIT_TOO_MANY_ERRORS,
    FileNotFoundError: EXIT_USAGE,
    ValueError: EXIT_USAGE,
    JobFailed: EXIT_FAILED,
    OSError: EXIT_FAILED,
}


def exit_status(error: BaseException) -> int:
  """The exit status for a failure; raises what it does not know."""
  for kind, status in EXIT_STATUSES.items():
    if isinstance(error, kind):
      return status
  raise error


def failure_message(error: BaseException, verbose: bool) -> str:
  """The one line a failure prints (and where to look for more), with
  what to change where the GPU ran out of memory."""
  line = f'featurize: error: {error}'
  if isinstance(error, JobFailed) and not verbose:
    line += ' (run again with --verbose for the runner\'s log)'
  hint = gpu_memory_hint(str(error)) or mps_hint(str(error))
  return f'{line}\n{hint}' if hint else line


# How CUDA names a failure of its MPS client or server
# (CUDA_ERROR_MPS_CONNECTION_FAILED, ..._MPS_SERVER_NOT_READY, ...).
_MPS_FAILURE = 'MPS_'


def mps_hint(text: str) -> Optional[str]:
  """What to change when ``text`` (a failure) says CUDA's MPS failed,
  else None: the run's worker processes share a GPU through an MPS daemon
  (``pipeline/runners/local_gpu/mps.py``) that this machine may not allow."""
  if _MPS_FAILURE not in text:
    return None
  return (f'featurize: NVIDIA MPS could not serve the worker processes: '
          f'run with {mps.MPS_ENV}=off to share the GPU without it')


# How JAX (XLA's status) and torch (nvJPEG's buffers) say that a GPU's
# memory ran out.
_GPU_OUT_OF_MEMORY = ('RESOURCE_EXHAUSTED', 'CUDA out of memory')


def gpu_memory_hint(text: str) -> Optional[str]:
  """What to change when ``text`` (a failure) says a GPU ran out of
  memory, else None. Several worker processes sharing a GPU each get
  their share of its memory (``local_gpu.sharing.share_gpus``), so the
  usual cause
  is too many of them for the batch size."""
  if not any(sign in text for sign in _GPU_OUT_OF_MEMORY):
    return None
  processes = backend.gpu_processes()
  share = (f'each of the {processes} worker processes sharing a GPU gets '
           f'{backend.memory_fraction(processes):.0%} of its memory for '
           'the model; ' if processes > 1 else '')
  return ('featurize: the GPU ran out of memory: ' + share +
          'run fewer processes (--direct_num_workers), a smaller '
          '--batch-size, or set XLA_PYTHON_CLIENT_MEM_FRACTION')


def quiet_start(verbose: bool, model_here: bool, device: str = 'cpu') -> None:
  """Keeps start-up chatter out of the terminal unless ``verbose``.

  Where the model runs in this process (``model_here``), Keras and its
  backend for ``device`` (TensorFlow or JAX) are imported now, with their
  start-up lines held back (``transforms/extract/quiet_import.py``; worker
  processes do the same).
  ``TF_CPP_MIN_LOG_LEVEL`` quiets later C++ logs here and in worker
  processes, which inherit it. Beam's own log of a failure (tracebacks
  of the failing step) is left out too: the failure's one line says what
  failed, and ``--verbose`` shows the rest.
  """
  if verbose:
    os.environ[quiet_import.VERBOSE_ENV] = '1'  # worker processes too
    logging.getLogger().setLevel(logging.INFO)
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  logging.getLogger('apache_beam').setLevel(logging.CRITICAL)
  logging.getLogger('absl').setLevel(logging.ERROR)
  if model_here:
    quiet_import.import_quietly(device)


def precision_line(model: ModelConfig, given: bool) -> Optional[str]:
  """The line a GPU run starts with: which precision, and why.

  Args:
    model: The job's model settings.
    given: Whether ``--precision`` was set (flag or run config).

  Returns:
    The line, or None on cpu (whose default has always been float32).
  """
  if model.device != 'gpu':
    return None
  if model.precision == 'bfloat16':
    why = ('the gpu default' if not given else '--precision bfloat16')
    return (f'featurize: gpu: {model.display_name} in bfloat16 ({why}; '
            '--precision float32 for true float32, about a tenth of the '
            'speed)')
  why = '--precision float32' if given else 'the gpu default'
  return (f'featurize: gpu: {model.display_name} in true float32 ({why}; '
          'bfloat16, the gpu default, runs about 10x faster)')
