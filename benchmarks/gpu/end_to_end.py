"""featurize end to end on the GPU: shards in, features out.

Each run is ``featurize run --device gpu`` on the FnApiRunner, with
``processes`` SDK worker processes sharing the GPU
(``--direct_running_mode=multi_processing``; one process runs in the
launcher), in a process of its own, while samplers read the GPU's
utilisation and memory from ``nvidia-smi`` and the resident memory of
the launcher and its worker processes from ``/proc``. Runs over 20,000
and 100,000 images give the steady rate as the difference of the two
(start-up, the model's compile and the last publish cancel out) and
show whether memory stays flat.
"""
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _children(pid: int) -> List[int]:
  """Every thread's children: Beam starts its worker processes from a
  thread of its own, and /proc lists children by the thread that made
  them."""
  found = []
  try:
    for task in os.listdir(f'/proc/{pid}/task'):
      with open(f'/proc/{pid}/task/{task}/children') as f:
        found.extend(int(p) for p in f.read().split())
  except OSError:
    pass
  return found


def _rss_kib(pid: int) -> int:
  try:
    with open(f'/proc/{pid}/status') as f:
      for line in f:
        if line.startswith('VmRSS:'):
          return int(line.split()[1])
  except OSError:
    pass
  return 0


class TreeRssSampler:
  """Samples the resident memory of a process and all its descendants."""

  def __init__(self, pid: int, interval_s: float = 0.25):
    self.peak_total_kib = 0
    self.peak_process_kib = 0
    self._pid = pid
    self._interval_s = interval_s
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      pids, todo = [], [self._pid]
      while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(_children(pid))
      sizes = [_rss_kib(pid) for pid in pids]
      self.peak_total_kib = max(self.peak_total_kib, sum(sizes))
      self.peak_process_kib = max([self.peak_process_kib] + sizes)
      self._stop.wait(self._interval_s)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join(timeout=5)


class GpuSampler:
  """Samples ``nvidia-smi`` every ``interval_ms`` in the background."""

  def __init__(self, interval_ms: int = 250):
    self.samples: List[tuple] = []  # (seconds, utilisation %, MiB used)
    self._interval_ms = interval_ms
    self._process = None
    self._thread = None

  def __enter__(self):
    if not shutil.which('nvidia-smi'):  # a CPU smoke run: nothing to read
      return self
    self._process = subprocess.Popen(
        ['nvidia-smi', '--query-gpu=utilization.gpu,memory.used',
         '--format=csv,noheader,nounits', f'-lms={self._interval_ms}', '-i',
         '0'], stdout=subprocess.PIPE, text=True)
    started = time.perf_counter()

    def read():
      for line in self._process.stdout:
        parts = [p.strip() for p in line.split(',')]
        if len(parts) == 2 and all(p.isdigit() for p in parts):
          self.samples.append((time.perf_counter() - started, int(parts[0]),
                               int(parts[1])))

    self._thread = threading.Thread(target=read, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    if self._process is None:
      return
    self._process.terminate()
    self._process.wait()
    self._thread.join(timeout=5)

  def busy_summary(self) -> Dict[str, Optional[float]]:
    """Mean utilisation from the first busy sample to the last, and the
    peak memory."""
    busy = [i for i, s in enumerate(self.samples) if s[1] > 0]
    if not busy:
      return {'gpu_utilisation_percent': None, 'gpu_memory_peak_mib': None}
    window = self.samples[busy[0]:busy[-1] + 1]
    return {'gpu_utilisation_percent': round(
        sum(s[1] for s in window) / len(window), 1),
            'gpu_memory_peak_mib': max(s[2] for s in self.samples)}


def featurize_run(input_pattern: str, out: str, images: int,
                  extra: Sequence[str], env: Optional[dict] = None,
                  processes: int = 1, server: bool = False) -> dict:
  """One ``featurize run --device gpu``; returns its measurements.

  Args:
    input_pattern: The shards.
    out: The output folder (emptied first and after).
    images: How many images the shards hold.
    extra: More featurize flags.
    env: The environment (default: this process's).
    processes: SDK worker processes.
    server: One server process owns the GPU and the workers send it
      batches (``--large-model``).
  """
  shutil.rmtree(out, ignore_errors=True)
  runner = (['--direct_running_mode=multi_processing',
             f'--direct_num_workers={processes}'] if processes > 1 else [])
  if server:
    runner.append('--large-model')
  command = [sys.executable, '-m', 'tests.peak_rss', 'run', '--config',
             os.path.join(ROOT, 'run_configs', 'local.yaml'), '--input',
             input_pattern, '--output', out, '--device', 'gpu', '--weights',
             'random', '--quiet', *extra, *runner]
  with GpuSampler() as sampler:
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    with TreeRssSampler(child.pid) as tree:
      stdout, stderr = child.communicate()
    wall = time.perf_counter() - started
  if child.returncode != 0:
    raise RuntimeError(f'featurize failed ({child.returncode}):\n'
                       f'{stdout[-3000:]}\n{stderr[-3000:]}')
  rss = re.search(r'PEAK_RSS_KB (\d+)', stdout)
  steps = re.search(r'host time a GPU batch: (.*)', stdout)
  per_image = re.search(r'host time an image: (.*)', stdout)
  routed = re.search(r'decoded by nvJPEG ([\d.]+)%, by the CPU ([\d.]+)%(.*)',
                     stdout)
  first = re.search(r'first record after ([\d.]+) s', stdout)
  written = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)
                if f.startswith('features-'))
  shutil.rmtree(out, ignore_errors=True)
  # The launcher's own peak, and with several processes the sampled peak
  # of the launcher and its workers together (the host's share of a run).
  launcher_mib = round(int(rss.group(1)) / 1024, 1)
  result = {'images': images, 'processes': processes, 'server': server,
            'wall_s': round(wall, 2),
            'images_per_s_wall': round(images / wall, 1),
            'first_record_s': float(first.group(1)) if first else None,
            'launcher_peak_rss_mib': launcher_mib,
            'host_peak_rss_mib': max(launcher_mib,
                                     round(tree.peak_total_kib / 1024, 1)),
            'largest_process_peak_rss_mib': round(
                tree.peak_process_kib / 1024, 1),
            'feature_bytes_written': written,
            'routed': {'device': float(routed.group(1)) / 100,
                       'cpu': float(routed.group(2)) / 100,
                       'detail': routed.group(3).strip(' ()')}
                      if routed else None,
            'host_time_per_batch': steps.group(1) if steps else None,
            'host_time_per_image': per_image.group(1) if per_image else None,
            'stdout': stdout.strip().splitlines()[-8:]}
  result.update(sampler.busy_summary())
  print(f'end-to-end {" ".join(extra)} {images} images: {result}',
        flush=True)
  return result


def after_first_record_rate(run: dict) -> Optional[float]:
  """Images/s of one run after its first record (start-up excluded; the
  final publish included): for comparing settings with one run each."""
  if not run.get('first_record_s'):
    return None
  return round(run['images'] / (run['wall_s'] - run['first_record_s']), 1)


def steady_rate(small: dict, large: dict) -> float:
  """Images/s between the two runs: start-up costs cancel out."""
  return round((large['images'] - small['images']) /
               (large['wall_s'] - small['wall_s']), 1)


def where_time_goes(run: dict, batch_size: int,
                    steady_images_per_s: float) -> Dict[str, float]:
  """Microseconds an image, by step, from a run's summary lines.

  The bundle's thread reads, routes, hands batches over and writes; the
  helper thread decodes on the device, resizes and dispatches
  (overlapping the bundle's thread); ``wait`` is the bundle's thread
  waiting for a batch (its preparation and the model). ``other`` is the
  rest of the wall time a steady image costs one process (each of
  ``run['processes']`` takes its share of the images): Beam's per-element
  work, the batching and the hand-over.
  """
  out = {}
  for part in (run['host_time_per_image'] or '').split(', '):
    name, value, _ = part.split(' ')
    out[f'bundle thread: {name}'] = float(value)
  for part in (run['host_time_per_batch'] or '').split(', '):
    name, value, _ = part.split(' ')
    thread = 'bundle thread' if name == 'wait' else 'helper thread'
    out[f'{thread}: {name}'] = round(float(value) * 1e3 / batch_size, 1)
  steady = 1e6 * run.get('processes', 1) / steady_images_per_s
  out['steady wall per image'] = round(steady, 1)
  out['bundle thread: other'] = round(steady - sum(
      value for name, value in out.items()
      if name.startswith('bundle thread')), 1)
  return out
