"""The GPU benchmark's measures, on made-up samples: the steady rate from
the workers' progress, the cores by thread, the layouts' labels."""
import os

from benchmarks.gpu import end_to_end, run


def _progress(samples):
  sampler = end_to_end.ProgressSampler()
  sampler.samples = samples
  return sampler


def test_steady_rate_is_the_slope_between_20_and_90_percent():
  # Two workers: a slow start (compile), then 100 and 50 images/s, then a
  # pause (the publish) that must not count.
  samples = [(t, {'1': 0, '2': 0}) for t in range(10)]
  samples += [(10 + t, {'1': 100 * t, '2': 50 * t}) for t in range(21)]
  samples += [(31 + t, {'1': 2000, '2': 1000}) for t in range(10)]
  summary = _progress(samples).summary()
  assert summary['steady_images_per_s'] == 150.0
  assert summary['per_process_images_per_s'] == [100.0, 50.0]
  assert summary['steady_window_s'] == [14, 28]  # 600 and 2,700 of 3,000
  assert _progress(samples).time_of(1500) == 20


def test_no_progress_gives_no_rate():
  assert _progress([(0, {}), (1, {'1': 0})]).summary()[
      'steady_images_per_s'] is None


def test_cores_by_thread_add_a_pools_threads_up():
  sampler = end_to_end.ThreadCpuSampler(os.getpid())
  sampler.samples = [
      (0.0, {(1, 11, 'fz-cpu-decode'): 1.0, (1, 12, 'fz-cpu-decode'): 0.0,
             (1, 13, 'fz-bundle'): 5.0}),
      (2.0, {(1, 11, 'fz-cpu-decode'): 2.0, (1, 12, 'fz-cpu-decode'): 1.0,
             (1, 13, 'fz-bundle'): 6.0, (2, 21, 'worker_7'): 1.0})]
  assert sampler.cores_by_thread(0.0, 2.0) == {
      'fz-cpu-decode': 1.0, 'fz-bundle': 0.5, 'worker': 0.5, 'total': 2.0}


def test_layout_labels():
  assert run.parse_layout('8') == (8, False, None)
  count, server, env = run.parse_layout('4s:A=1+B=x=y')
  assert (count, server, env['A'], env['B']) == (4, True, '1', 'x=y')


def test_all_busy_rate_spans_only_the_time_every_process_writes():
  # Worker 2 starts 4 s after worker 1 and both stop at their own ends:
  # only t = 4..10 has both writing, at 100 + 100 images/s.
  samples = []
  for t in range(16):
    one = 100 * min(t, 10)
    two = 100 * max(0, min(t, 14) - 4)
    samples.append((t, {'1': one, '2': two}))
  summary = _progress(samples).summary()
  assert summary['all_busy_window_s'] == [5, 10]
  assert summary['all_busy_images_per_s'] == 200.0
  # Each worker's first and last image: 1 from 1 s to 10 s, 2 from 5 s
  # to 14 s.
  assert summary['per_process_span_s'] == [[1, 10], [5, 14]]
  # Too short a window gives no figure, and says so.
  short = _progress([(0, {'1': 0, '2': 0}), (1, {'1': 100, '2': 0}),
                     (2, {'1': 100, '2': 100})]).all_busy()
  assert short['all_busy_images_per_s'] is None


def _rate_after_barrier(rate, barrier):
  barrier.wait()  # every process of every group must arrive
  return rate


def test_groups_started_together_sum_by_group():
  from benchmarks.gpu import components  # pylint: disable=import-outside-toplevel
  assert components.together([(_rate_after_barrier, 2, (10.0,)),
                              (_rate_after_barrier, 1, (3.5,))]) == [20.0, 3.5]


def test_rates_sum_their_images_and_average_their_cpu_over_the_images():
  from benchmarks.gpu import components  # pylint: disable=import-outside-toplevel
  rates = [components.Rate(100.0, 400.0), components.Rate(300.0, 200.0)]
  assert components.summed(rates) == {'images_per_s': 400.0,
                                      'cpu_us_per_image': 250.0}
  assert components.summed([2.5, 4.0]) == 6.5


def test_threads_decoding_at_once_are_counted_together():
  import threading  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  from benchmarks.gpu import components  # pylint: disable=import-outside-toplevel

  class Barrier:
    def wait(self):
      pass

  seen = set()

  def decode_batch(part):
    seen.add(threading.get_ident())
    time.sleep(0.01)  # waits like a device call: threads overlap

  one = components._measure([[b'x'] * 4], decode_batch, 0.3, Barrier(),
                            False, threads=1)
  four = components._measure([[b'x'] * 4], decode_batch, 0.3, Barrier(),
                             False, threads=4)
  assert len(seen) >= 4  # the batches went to several threads
  assert four.images_per_s > 2.5 * one.images_per_s
  assert one.cpu_us_per_image < 2000  # sleeping costs little CPU
