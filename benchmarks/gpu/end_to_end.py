"""featurize end to end on the GPU: TFRecord shards in, features out.

Each run is ``featurize run --device gpu`` on the FnApiRunner (one
process, as README's "Running on GPUs" advises), in a process of its own
(``tests.peak_rss``, which prints the process's peak RSS), while a
sampler reads the GPU's utilisation and memory from ``nvidia-smi``.
Runs over 20,000 and 100,000 images give the steady rate as the
difference of the two (start-up, the model's compile and the last
publish cancel out) and show whether memory stays flat.
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
                  extra: Sequence[str], env: Optional[dict] = None) -> dict:
  """One ``featurize run --device gpu``; returns its measurements."""
  shutil.rmtree(out, ignore_errors=True)
  command = [sys.executable, '-m', 'tests.peak_rss', 'run', '--config',
             os.path.join(ROOT, 'run_configs', 'local.yaml'), '--input',
             input_pattern, '--output', out, '--device', 'gpu', '--weights',
             'random', '--quiet', *extra]
  with GpuSampler() as sampler:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env=env)
    wall = time.perf_counter() - started
  if done.returncode != 0:
    raise RuntimeError(f'featurize failed ({done.returncode}):\n'
                       f'{done.stdout[-3000:]}\n{done.stderr[-3000:]}')
  rss = re.search(r'PEAK_RSS_KB (\d+)', done.stdout)
  steps = re.search(r'host time a GPU batch: (.*)', done.stdout)
  per_image = re.search(r'host time an image: (.*)', done.stdout)
  written = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)
                if f.startswith('features-'))
  shutil.rmtree(out, ignore_errors=True)
  result = {'images': images, 'wall_s': round(wall, 2),
            'images_per_s_wall': round(images / wall, 1),
            'host_peak_rss_mib': round(int(rss.group(1)) / 1024, 1),
            'feature_bytes_written': written,
            'host_time_per_batch': steps.group(1) if steps else None,
            'host_time_per_image': per_image.group(1) if per_image else None,
            'stdout': done.stdout.strip().splitlines()[-6:]}
  result.update(sampler.busy_summary())
  print(f'end-to-end {" ".join(extra)} {images} images: {result}',
        flush=True)
  return result


def steady_rate(small: dict, large: dict) -> float:
  """Images/s between the two runs: start-up costs cancel out."""
  return round((large['images'] - small['images']) /
               (large['wall_s'] - small['wall_s']), 1)


def where_time_goes(run: dict, batch_size: int,
                    steady_images_per_s: float) -> Dict[str, float]:
  """Microseconds an image, by step, from a run's summary lines.

  The bundle's thread reads, hands batches over and writes; the helper
  thread screens, decodes and dispatches (overlapping the bundle's
  thread); ``wait`` is the bundle's thread waiting for a batch (its
  preparation and the model). ``other`` is the rest of the wall time a
  steady image costs: Beam's per-element work, the batching and the
  hand-over.
  """
  out = {}
  for part in (run['host_time_per_image'] or '').split(', '):
    name, value, _ = part.split(' ')
    out[f'bundle thread: {name}'] = float(value)
  for part in (run['host_time_per_batch'] or '').split(', '):
    name, value, _ = part.split(' ')
    thread = 'bundle thread' if name == 'wait' else 'helper thread'
    out[f'{thread}: {name}'] = round(float(value) * 1e3 / batch_size, 1)
  steady = 1e6 / steady_images_per_s
  out['steady wall per image'] = round(steady, 1)
  out['bundle thread: other'] = round(steady - sum(
      value for name, value in out.items()
      if name.startswith('bundle thread')), 1)
  return out
