"""Worker processes sharing a GPU take turns for their models
(``transforms/gpu/model_turns.py``): the lock itself across processes and
threads, the model wrapper, and when turns are taken."""
import multiprocessing
import threading
import time

import numpy as np

from transforms.gpu import model_turns


def _hold_turns(folder, times, out):
  """Takes GPU 0's turn ``times`` times; puts the (start, end) of each."""
  turns = model_turns.Turns(folder)
  held = []
  for _ in range(times):
    with turns.turn(0):
      start = time.monotonic()
      time.sleep(0.004)
      held.append((start, time.monotonic()))
  turns.close()
  out.put(held)


def _overlaps(spans):
  spans = sorted(spans)
  return [(a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]


def test_processes_hold_a_gpus_turn_one_at_a_time(tmp_path):
  context = multiprocessing.get_context('spawn')
  out = context.Queue()
  workers = [context.Process(target=_hold_turns,
                             args=(str(tmp_path), 25, out))
             for _ in range(3)]
  for worker in workers:
    worker.start()
  spans = [span for _ in workers for span in out.get(timeout=120)]
  for worker in workers:
    worker.join(timeout=60)
    assert worker.exitcode == 0
  assert len(spans) == 75
  assert _overlaps(spans) == []
  assert (tmp_path / 'featurize-gpu0-model-turn.lock').exists()


def test_threads_of_one_process_hold_it_one_at_a_time(tmp_path):
  """``flock`` holds for an open file, not a thread: the process's own
  lock keeps its threads apart too."""
  turns = model_turns.Turns(str(tmp_path))
  spans, guard = [], threading.Lock()

  def hold():
    for _ in range(20):
      with turns.turn(0):
        start = time.monotonic()
        time.sleep(0.002)
        with guard:
          spans.append((start, time.monotonic()))

  threads = [threading.Thread(target=hold) for _ in range(3)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert len(spans) == 60 and _overlaps(spans) == []


def test_each_gpu_has_its_own_turn(tmp_path):
  turns = model_turns.Turns(str(tmp_path))
  with turns.turn(0):
    done = []
    other = threading.Thread(target=lambda: done.append(
        turns.turn(1).__enter__()))  # GPU 1 is free while GPU 0 is held
    other.start()
    other.join(timeout=10)
    assert not other.is_alive() and done == [None]
  assert model_turns.lock_path(1, str(tmp_path)).endswith(
      'featurize-gpu1-model-turn.lock')


def test_turns_are_taken_only_where_processes_share_a_gpu():
  on = {model_turns.TURNS_ENV: '1'}
  off = {model_turns.TURNS_ENV: '0'}
  assert not model_turns.wanted(1, on)
  assert model_turns.wanted(8, on)
  assert not model_turns.wanted(8, off)
  assert model_turns.wanted(8, {}) == model_turns.DEFAULT


class _Model:
  batch_size = 4

  def __init__(self):
    self.calls = []

  def __call__(self, pixels, replica):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    self.calls.append(replica)
    return jnp.asarray(pixels).sum(axis=(1, 2, 3))


def test_taking_turns_gives_the_models_outputs_finished(tmp_path):
  inner = _Model()
  taking = model_turns.TakingTurns(inner, model_turns.Turns(str(tmp_path)),
                                   [5])
  assert taking.batch_size == 4  # the model's attributes pass through
  pixels = np.ones((4, 2, 2, 3), np.uint8)
  got = taking(pixels, 0)
  assert inner.calls == [0]
  np.testing.assert_array_equal(np.asarray(got), [12] * 4)
  assert (tmp_path / 'featurize-gpu5-model-turn.lock').exists()
