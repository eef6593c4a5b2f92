"""A stand-in for NVIDIA's MPS control program, for tests on machines
without a GPU."""
import json
import os
import stat
import sys

from pipeline.runners.local_gpu import mps
from transforms.extract import backend
from transforms.extract.gpu import gpu_slot

# What the launcher gives the worker processes of a local GPU run (and
# the control program, which it starts after setting them): recorded.
SHARED_SETTINGS = (backend.WORKER_PROCESSES_ENV, backend.GPU_PROCESSES_ENV,
                   backend.MEMORY_FRACTION_ENV, mps.SHARE_ENV,
                   gpu_slot.GPUS_ENV)


def fake_control(folder, exit_status: int = 0, daemon_s: int = 0) -> str:
  """A stand-in for NVIDIA's control program: it records each call (its
  arguments, its pipe folder, what it read, the ``SHARED_SETTINGS`` of
  its environment) as a JSON line in ``calls.jsonl`` beside it; with
  ``daemon_s``, its ``-d`` leaves a process that keeps its output open
  that long, as a daemon may. Returns its folder, for the PATH."""
  path = os.path.join(str(folder), mps.CONTROL)
  log = os.path.join(str(folder), 'calls.jsonl')
  with open(path, 'w') as f:
    f.write(f'#!{sys.executable}\n'
            'import json, os, sys\n'
            'read = "" if "-d" in sys.argv else sys.stdin.read()\n'
            f'with open({log!r}, "a") as f:\n'
            '  f.write(json.dumps({"args": sys.argv[1:], "read": read,\n'
            f'    "pipe": os.environ.get({mps.PIPE_ENV!r}),\n'
            '    "pipe_exists": os.path.isdir(os.environ.get('
            f'{mps.PIPE_ENV!r}, "")),\n'
            f'    "env": {{k: os.environ[k] for k in {SHARED_SETTINGS!r}\n'
            '            if k in os.environ}}) + "\\n")\n'
            'if "-d" in sys.argv and ' + str(daemon_s) + ':\n'
            '  import subprocess\n'
            '  subprocess.Popen(["sleep", "' + str(daemon_s) + '"])\n'
            'if "-d" in sys.argv and ' + str(exit_status) + ':\n'
            '  print("cannot start: no GPU", file=sys.stderr)\n'
            f'sys.exit({exit_status} if "-d" in sys.argv else 0)\n')
  os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
  return str(folder)


def calls(folder) -> list:
  path = os.path.join(str(folder), 'calls.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f]


def put_first_on_path(monkeypatch, folder) -> None:
  """Makes ``folder`` (a ``fake_control``'s) the PATH's first."""
  monkeypatch.setenv('PATH', folder + os.pathsep + os.environ['PATH'])
