"""Several GPUs in one machine: which GPU each worker process takes, and
each process's share of its GPU's memory and of the machine's cores
(``pipeline/runners/local_gpu``, ``transforms/extract/gpu/gpu_slot.py``). The
claims are real ``flock``s, by real processes where it matters."""
import collections
import os
import subprocess
import sys

import pytest

from tests.support.paths import ROOT
from pipeline.runners.local_gpu import placement, sharing
from transforms.extract import backend
from transforms.extract.gpu import gpu_slot


def test_the_gpus_are_the_visible_ones_else_the_drivers():
  assert placement.machine_gpus({'CUDA_VISIBLE_DEVICES': '2,3'}) == [
      '2', '3']
  assert placement.machine_gpus({'CUDA_VISIBLE_DEVICES': ''}) == []
  def listed(path):
    return ['0000:17:00.0', '0000:65:00.0', '0000:ca:00.0']

  assert placement.machine_gpus({}, listdir=listed) == ['0', '1', '2']

  def no_driver(path):
    raise FileNotFoundError(path)

  assert placement.machine_gpus({}, listdir=no_driver) == []


@pytest.mark.parametrize('processes, gpus, counts', [
    (8, 2, [4, 4]), (8, 4, [2, 2, 2, 2]), (6, 4, [2, 2, 1, 1]),
    (16, 8, [2] * 8), (3, 1, [3]), (1, 2, [1, 1]), (2, 4, [1, 1, 1, 1]),
    (3, 4, [1, 1, 1, 1])])
def test_slots_spread_the_processes_evenly_and_leave_no_gpu_out(
    processes, gpus, counts):
  names = [str(g) for g in range(gpus)]
  chosen = [gpu_slot.gpus_of_slot(slot, processes, names)
            for slot in range(processes)]
  taken = collections.Counter(g for each in chosen for g in each)
  assert [taken[name] for name in names] == counts
  assert placement.processes_per_gpu(processes, gpus) == max(counts)
  # One GPU a process; with fewer processes than GPUs, several.
  want = -(-gpus // processes) if processes < gpus else 1
  assert max(len(each) for each in chosen) == want


def test_each_claim_takes_the_first_free_slot_until_its_holder_lets_go(
    tmp_path):
  claims = [gpu_slot.claim_slot(str(tmp_path), 3) for _ in range(3)]
  assert [slot for slot, _ in claims] == [0, 1, 2]
  assert gpu_slot.claim_slot(str(tmp_path), 3) is None
  claims[0][1].close()  # slot 0's holder ends
  slot, _ = gpu_slot.claim_slot(str(tmp_path), 3)
  assert slot == 0


CLAIM = '''
import os, sys, time
from transforms.extract.gpu import gpu_slot
print(gpu_slot.place_this_process(int(sys.argv[1])), flush=True)
print(os.environ.get('CUDA_VISIBLE_DEVICES'), flush=True)
sys.stdin.read()  # hold the slot until told
'''


def test_worker_processes_take_one_gpu_each_and_spread_evenly(tmp_path):
  """Eight processes, as Beam starts them, over two GPUs: four each, each
  process's CUDA_VISIBLE_DEVICES narrowed to its own GPU; a process that
  replaces a dead one takes the dead one's GPU."""
  environ = dict(os.environ, PYTHONPATH=ROOT)
  environ.pop('CUDA_VISIBLE_DEVICES', None)
  with placement.spread(['0', '1'], environ):
    assert environ[gpu_slot.GPUS_ENV] == '0,1'
    folder = environ[gpu_slot.SLOTS_ENV]

    def start():
      return subprocess.Popen([sys.executable, '-c', CLAIM, '8'], env=environ,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)

    workers = [start() for _ in range(8)]
    placed = [(w.stdout.readline().strip(), w.stdout.readline().strip())
              for w in workers]
    assert all(gpu == visible for gpu, visible in placed)
    assert collections.Counter(gpu for gpu, _ in placed) == {'0': 4, '1': 4}
    dead = workers.pop(3)
    dead.kill()
    dead.wait()
    replacement = start()
    assert replacement.stdout.readline().strip() == placed[3][0]
    for worker in workers + [replacement]:
      worker.communicate('')
  assert gpu_slot.GPUS_ENV not in environ
  assert not os.path.exists(folder)


def test_one_gpu_or_none_places_nothing(monkeypatch):
  monkeypatch.delenv(gpu_slot.GPUS_ENV, raising=False)
  environ = {'CUDA_VISIBLE_DEVICES': '0'}
  assert gpu_slot.place_this_process(8, environ) is None
  assert environ == {'CUDA_VISIBLE_DEVICES': '0'}
  with placement.spread(['0'], environ):
    assert gpu_slot.GPUS_ENV not in environ


def test_each_process_takes_its_gpus_share_of_memory_and_the_machines_cores(
    monkeypatch):
  """Eight processes over two GPUs: four share each GPU's memory (0.2 each
  of JAX's pool), and eight share the host's cores."""
  for name in ('XLA_PYTHON_CLIENT_MEM_FRACTION',
               'FEATURIZE_JAX_MEMORY_FRACTION_DEFAULTED',
               backend.GPU_PROCESSES_ENV, backend.WORKER_PROCESSES_ENV):
    monkeypatch.delenv(name, raising=False)
  sharing.share_gpus(8, per_gpu=placement.processes_per_gpu(8, 2))
  assert backend.gpu_processes() == 4 and backend.worker_processes() == 8
  assert os.environ['XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.2'
  assert backend.cpu_decode_threads(cores=32) == 4
  # One GPU: all eight share it.
  sharing.share_gpus(8)
  assert backend.gpu_processes() == 8
  assert os.environ['XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.1'
