"""NVIDIA MPS for the worker processes of a local run that share a GPU.

Without MPS, a GPU runs one process's work at a time, switching between
the processes' contexts in time slices: the nvJPEG decode of one worker
process and the model of another never run at once, and the model runs
at about half its speed beside decoding processes. MPS runs all the
processes' kernels on the GPU together, through one server, so a local
run with several worker processes starts NVIDIA's control daemon for
itself (``sharing``) unless one already serves the machine. Dataflow's
``use_nvidia_mps`` service option does the same on its workers.

Under MPS, each worker process's kernels may also be held to a share of
the GPU's multiprocessors (NVIDIA's ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``,
set in the environment the workers inherit). With many processes, half
the GPU each lets nvJPEG's batches wait less behind the other processes'
model kernels and was measured faster (a quarter was slower). So a run
of ``SHARE_FROM`` processes or more sets half (``SHARE``) unless the user
set the variable; fewer processes were not measured and keep the whole
GPU each (docs/gpu.md).

NVIDIA's ``nvidia-cuda-mps-control`` is the tool; this module only
decides whether to start it, points the worker processes at it through
the environment they inherit, and stops it after the run. Nothing here
imports CUDA.
"""
import contextlib
import os
import shutil
import subprocess
import tempfile
from typing import Callable, Iterator, Mapping, NamedTuple, Optional

# 'auto' (the default): start a daemon for a local run with several worker
# processes on a GPU; 'off': never.
MPS_ENV = 'FEATURIZE_GPU_MPS'
MPS_CHOICES = ('auto', 'off')
CONTROL = 'nvidia-cuda-mps-control'
# NVIDIA's variables: where CUDA clients find the daemon, where it logs.
PIPE_ENV = 'CUDA_MPS_PIPE_DIRECTORY'
LOG_ENV = 'CUDA_MPS_LOG_DIRECTORY'
# NVIDIA's variable: the percentage of the GPU's multiprocessors that one
# MPS client's kernels may use; what featurize sets, and from how many
# worker processes (module docstring).
SHARE_ENV = 'CUDA_MPS_ACTIVE_THREAD_PERCENTAGE'
SHARE = 50
SHARE_FROM = 8
# Where a machine-wide daemon listens when its pipe folder is the default.
DEFAULT_PIPE = '/tmp/nvidia-mps'
# How long a call of the control program may take (start or quit).
_CONTROL_TIMEOUT_S = 30


class Plan(NamedTuple):
  """What a run does about MPS.

  Attributes:
    start: Start a daemon of the run's own.
    line: What to tell the user, one line.
    share: The value of ``SHARE_ENV`` to give the worker processes, or ''
      to leave it as it is.
  """
  start: bool
  line: str
  share: str = ''


def plan(processes: int, environ: Mapping[str, str],
         which: Callable[[str], Optional[str]] = shutil.which,
         exists: Callable[[str], bool] = os.path.exists) -> Plan:
  """Decides whether a local GPU run starts an MPS daemon.

  Args:
    processes: Worker processes that share each GPU.
    environ: The launcher's environment.
    which: Finds a program on the PATH (a seam for tests).
    exists: Whether a path exists (a seam for tests).

  Returns:
    The plan; ``start`` is true only for several processes, with
    ``MPS_ENV`` unset or 'auto', no daemon already named in
    ``PIPE_ENV`` or listening in ``DEFAULT_PIPE``, and NVIDIA's control
    program on the PATH. ``share`` is ``SHARE`` where MPS serves
    ``SHARE_FROM`` processes or more and ``SHARE_ENV`` is unset (a daemon
    that does not start after all leaves it unused).

  Raises:
    ValueError: ``MPS_ENV`` is neither 'auto' nor 'off'.
  """
  choice = environ.get(MPS_ENV, 'auto') or 'auto'
  if choice not in MPS_CHOICES:
    raise ValueError(f'{MPS_ENV} must be one of {", ".join(MPS_CHOICES)}, '
                     f'not {choice!r}')
  if processes < 2:
    return Plan(False, '')
  shared = f'{processes} worker processes share the GPU'
  if choice == 'off':
    return Plan(False, f'{shared} without NVIDIA MPS ({MPS_ENV}=off): the '
                'GPU runs one process at a time')
  share, held = '', ''
  if processes >= SHARE_FROM and not environ.get(SHARE_ENV):
    share = str(SHARE)
    held = f', each on at most {SHARE}% of its multiprocessors ({SHARE_ENV})'
  if environ.get(PIPE_ENV):
    return Plan(False, f'{shared} through the NVIDIA MPS daemon at '
                f'{environ[PIPE_ENV]} ({PIPE_ENV}){held}', share)
  if exists(os.path.join(DEFAULT_PIPE, 'control')):
    return Plan(False, f'{shared} through the machine\'s NVIDIA MPS daemon '
                f'({DEFAULT_PIPE}){held}', share)
  if not which(CONTROL):
    return Plan(False, f'{shared} without NVIDIA MPS ({CONTROL} is not on '
                'the PATH): the GPU runs one process at a time, which is '
                'slower; NVIDIA\'s CUDA tools install it')
  return Plan(True, f'{shared} through NVIDIA MPS (a daemon of this run\'s; '
              f'{MPS_ENV}=off runs without){held}', share)


def _start(environ: Mapping[str, str]) -> str:
  """Starts the control daemon; returns '' or why it did not start."""
  # Its output goes to a file, not a pipe: the daemon it forks could hold
  # a pipe open, and reading one would then wait for the daemon's end.
  said = os.path.join(environ[LOG_ENV], 'start.txt')
  try:
    with open(said, 'w+') as out:
      status = subprocess.run([CONTROL, '-d'], stdin=subprocess.DEVNULL,
                              stdout=out, stderr=subprocess.STDOUT,
                              env=dict(environ), timeout=_CONTROL_TIMEOUT_S,
                              check=False).returncode
      out.seek(0)
      lines = out.read().strip().splitlines()
  except (OSError, subprocess.SubprocessError) as e:
    return str(e) or type(e).__name__
  return '' if status == 0 else (lines[-1] if lines else f'exit {status}')


def _quit(environ: Mapping[str, str]) -> None:
  try:
    subprocess.run([CONTROL], input='quit\n', env=dict(environ),
                   capture_output=True, text=True, timeout=_CONTROL_TIMEOUT_S,
                   check=False)
  except (OSError, subprocess.SubprocessError):
    pass  # nothing more to do here: the run itself is over


@contextlib.contextmanager
def sharing(processes: int,
            say: Callable[[str], None] = lambda line: None) -> Iterator[None]:
  """Runs the body with the run's worker processes sharing the GPU
  through MPS where ``plan`` says so.

  A daemon of the run's own listens in a new temporary folder, which
  ``PIPE_ENV`` names in this process's environment for the worker
  processes it starts; on leaving, the daemon is told to quit (it ends its
  server) and the variable and folder are removed. If the daemon does not
  start, the run goes on without it and says why. Where the plan gives a
  ``share``, ``SHARE_ENV`` holds it for the body, with MPS of either kind.

  Args:
    processes: Worker processes that share each GPU.
    say: Takes the plan's line, for the user.
  """
  decided = plan(processes, os.environ)
  if not decided.start:
    if decided.line:
      say(decided.line)
    with _shared_out(decided.share):
      yield
    return
  folder = tempfile.mkdtemp(prefix='featurize-mps-')
  environ = dict(os.environ, **{PIPE_ENV: os.path.join(folder, 'pipe'),
                                LOG_ENV: os.path.join(folder, 'log')})
  os.makedirs(environ[PIPE_ENV])
  os.makedirs(environ[LOG_ENV])
  failed = _start(environ)
  if failed:
    shutil.rmtree(folder, ignore_errors=True)
    say(f'{processes} worker processes share the GPU without NVIDIA MPS: '
        f'{CONTROL} -d failed ({failed})')
    yield
    return
  say(decided.line)
  os.environ[PIPE_ENV] = environ[PIPE_ENV]
  try:
    with _shared_out(decided.share):
      yield
  finally:
    os.environ.pop(PIPE_ENV, None)
    _quit(environ)
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _shared_out(share: str) -> Iterator[None]:
  """``SHARE_ENV`` set to ``share`` (if any) in this process's environment
  for the body, for the worker processes it starts."""
  if not share:
    yield
    return
  os.environ[SHARE_ENV] = share
  try:
    yield
  finally:
    os.environ.pop(SHARE_ENV, None)
