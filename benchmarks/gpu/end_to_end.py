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

Within each run, ``ProgressSampler`` reads the workers' progress files
(``transforms/coordination/worker_progress.py``) a few times a second:
the slope of images written against time between 20 % and 90 % of the
run is its steady rate, free of start-up and of the last publish, and
each process's own slope shows whether every worker is fed.
``ThreadCpuSampler`` reads each thread's CPU time from ``/proc`` over the
same window: where the host's cores go, by thread name.
"""
import os
import collections
import glob
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from benchmarks import measure

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class _Sampler:
  """Calls ``sample(seconds since start)`` every ``interval_s`` in a
  thread of its own, from ``__enter__`` to ``__exit__``."""

  def __init__(self, interval_s: float):
    self._interval_s = interval_s
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self.started = time.perf_counter()

  def sample(self, now: float) -> None:
    raise NotImplementedError

  def _run(self):
    while not self._stop.is_set():
      self.sample(time.perf_counter() - self.started)
      self._stop.wait(self._interval_s)

  def __enter__(self):
    self.started = time.perf_counter()
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join(timeout=5)


class TreeRssSampler(_Sampler):
  """Samples the resident memory of a process and all its descendants."""

  def __init__(self, pid: int, interval_s: float = 0.25):
    super().__init__(interval_s)
    self.peak_total_kib = 0
    self.peak_process_kib = 0
    self.series: List[Tuple[float, int]] = []  # (seconds, total KiB)
    self._pid = pid

  def sample(self, now: float) -> None:
    sizes = [measure.status_kb(pid, 'VmRSS') or 0
             for pid in measure.process_tree(self._pid)]
    self.series.append((now, sum(sizes)))
    self.peak_total_kib = max(self.peak_total_kib, sum(sizes))
    self.peak_process_kib = max([self.peak_process_kib] + sizes)

  def peak_until_kib(self, moment: float) -> int:
    return max((kib for t, kib in self.series if t <= moment), default=0)


class GpuSampler:
  """Samples ``nvidia-smi`` every ``interval_ms`` in the background."""

  def __init__(self, interval_ms: int = 250):
    self.samples: List[tuple] = []  # (seconds, utilisation %, MiB used)
    self._interval_ms = interval_ms
    self._process = None
    self._thread = None

  def __enter__(self):
    self.started = time.perf_counter()
    if not shutil.which('nvidia-smi'):  # a CPU smoke run: nothing to read
      return self
    self._process = subprocess.Popen(
        ['nvidia-smi', '--query-gpu=utilization.gpu,memory.used',
         '--format=csv,noheader,nounits', f'-lms={self._interval_ms}', '-i',
         '0'], stdout=subprocess.PIPE, text=True)
    started = self.started

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


class ProgressSampler(_Sampler):
  """Samples the images each worker process has written, from the
  progress files of the run started after this sampler (``featurize
  run`` makes a ``featurize-progress-*`` folder in the temp folder)."""

  def __init__(self, interval_s: float = 0.25):
    super().__init__(interval_s)
    self.samples: List[Tuple[float, Dict[str, int]]] = []
    self._began_wall = time.time()
    self._folder = None

  def sample(self, now: float) -> None:
    if self._folder is None:
      found = [f for f in glob.glob(os.path.join(
          tempfile.gettempdir(), 'featurize-progress-*'))
               if os.path.getmtime(f) >= self._began_wall - 1]
      self._folder = found[0] if found else None
    if self._folder is None:
      return
    counts = {}
    for path in glob.glob(os.path.join(self._folder, '*.json')):
      try:
        with open(path) as f:
          counts[os.path.basename(path)[:-5]] = json.load(f).get(
              'images', 0)
      except (OSError, ValueError):
        pass  # replaced while read; the next sample sees it
    self.samples.append((now, counts))

  def written(self) -> int:
    """Images written by the last sample."""
    return sum(self.samples[-1][1].values()) if self.samples else 0

  def written_at(self, moment: float) -> int:
    """Images written by the first sample at or after ``moment``."""
    return next((sum(c.values()) for t, c in self.samples if t >= moment),
                self.written())

  def stopped(self, wait_s: float) -> bool:
    """Waits up to ``wait_s``; whether the sampler was stopped."""
    return self._stop.wait(wait_s)

  def time_of(self, images: int) -> Optional[float]:
    """When the run had written ``images`` images."""
    return next((t for t, c in self.samples if sum(c.values()) >= images),
                None)

  def window(self, low: float = 0.2, high: float = 0.9
             ) -> Optional[Tuple[float, float]]:
    """Times at which the run had written ``low`` and ``high`` of its
    images (of the most it reported)."""
    totals = [(t, sum(c.values())) for t, c in self.samples]
    final = max((n for _, n in totals), default=0)
    if final == 0:
      return None
    start = next((t for t, n in totals if n >= low * final), None)
    end = next((t for t, n in totals if n >= high * final), None)
    return (start, end) if start is not None and end and end > start else None

  def summary(self) -> dict:
    """The steady rate (images/s between 20 % and 90 % of the run) and
    each process's own rate over that window."""
    span = self.window()
    if span is None:
      return {'steady_images_per_s': None, 'per_process_images_per_s': []}
    start, end = span

    def at(moment):
      return next(c for t, c in self.samples if t >= moment)

    first, last = at(start), at(end)
    per_process = sorted(
        (round((last.get(pid, 0) - first.get(pid, 0)) / (end - start), 1)
         for pid in last), reverse=True)
    out = {'steady_images_per_s': round(
        (sum(last.values()) - sum(first.values())) / (end - start), 1),
           'steady_window_s': [round(start, 1), round(end, 1)],
           'per_process_images_per_s': per_process}
    out.update(self.all_busy())
    out['per_process_span_s'] = self.spans()
    return out

  def first_and_last(self) -> List[Tuple[float, float]]:
    """Each process's first image and the time it reached its final
    count (seconds from the start), for the processes that wrote any."""
    pids = {pid for _, c in self.samples for pid, n in c.items() if n > 0}
    out = []
    for pid in pids:
      final = max(c.get(pid, 0) for _, c in self.samples)
      out.append((next(t for t, c in self.samples if c.get(pid, 0) > 0),
                  next(t for t, c in self.samples
                       if c.get(pid, 0) >= final)))
    return out

  def spans(self) -> List[List[float]]:
    """``first_and_last``, rounded, by start: how far apart the
    processes began and ended."""
    return sorted([round(first, 1), round(last, 1)]
                  for first, last in self.first_and_last())

  def all_busy(self, shortest_s: float = 2.0) -> dict:
    """The rate while every process that wrote images was writing them:
    from the last one's first image to the first one's last. Processes
    start seconds apart (each loads and compiles its model), so with
    several the 20-90 % window can include some not yet started or
    already done; this one is a layout's own speed. None (with the span)
    where that window is shorter than ``shortest_s``."""
    spans = self.first_and_last()
    if not spans:
      return {'all_busy_images_per_s': None, 'all_busy_window_s': None}
    began = max(first for first, _ in spans)
    ended = min(last for _, last in spans)
    window = [round(began, 1), round(ended, 1)]
    if ended - began < shortest_s:
      return {'all_busy_images_per_s': None, 'all_busy_window_s': window}

    def total(moment):
      return sum(next(c for t, c in self.samples if t >= moment).values())

    return {'all_busy_images_per_s': round(
        (total(ended) - total(began)) / (ended - began), 1),
            'all_busy_window_s': window}


def _thread_cpu_seconds(pid: int) -> Dict[Tuple[int, str], float]:
  """CPU seconds (user + system) of each thread of ``pid``, by
  (tid, name)."""
  ticks = os.sysconf('SC_CLK_TCK')
  out = {}
  for task in glob.glob(f'/proc/{pid}/task/*'):
    try:
      with open(os.path.join(task, 'stat')) as f:
        stat = f.read()
    except OSError:
      continue
    name = stat[stat.index('(') + 1:stat.rindex(')')]
    fields = stat[stat.rindex(')') + 2:].split()
    out[(int(os.path.basename(task)), name)] = (
        int(fields[11]) + int(fields[12])) / ticks
  return out


class ThreadCpuSampler(_Sampler):
  """Keeps each thread's CPU time, of a process tree, at every sample,
  to tell where the cores went between two moments."""

  def __init__(self, pid: int, interval_s: float = 0.5):
    super().__init__(interval_s)
    self.samples: List[Tuple[float, Dict]] = []
    self._pid = pid

  def sample(self, now: float) -> None:
    cpu = {}
    for pid in measure.process_tree(self._pid):
      for (tid, name), seconds in _thread_cpu_seconds(pid).items():
        cpu[(pid, tid, name)] = seconds
    self.samples.append((now, cpu))

  def cores_by_thread(self, start: float, end: float,
                      top: int = 12) -> Dict[str, float]:
    """Cores busy between ``start`` and ``end``, by thread name (digits
    dropped, so that a pool's threads add up), busiest first, and
    ``total``."""
    before = next((c for t, c in self.samples if t >= start), None)
    after = next((c for t, c in self.samples if t >= end), None)
    if before is None or after is None:
      return {}
    span = end - start
    by_name = collections.Counter()
    for key, seconds in after.items():
      name = re.sub(r'[-_]?\d+$', '', key[2]) or key[2]
      by_name[name] += (seconds - before.get(key, 0.0)) / span
    out = {name: round(cores, 2) for name, cores in by_name.most_common(top)}
    out['total'] = round(sum(by_name.values()), 2)
    return out


def _spy(pid: int, progress: ProgressSampler, images: int, path: str,
         seconds: float) -> None:
  """Once a quarter of the images are written, samples the stacks of
  ``pid`` and its children with py-spy for ``seconds``, twice: the
  threads holding the GIL (``path``-gil.txt), then every busy thread with
  its native frames (``path``-native.txt); collapsed stacks, one a
  line with its count."""
  while progress.written() < images / 4:
    if progress.stopped(0.2):
      return
  for kind, flags in (('gil', ['--gil']), ('native', ['--native'])):
    subprocess.run(['py-spy', 'record', '--pid', str(pid), '--subprocesses',
                    '--nonblocking', '--rate', '200', '--duration',
                    str(int(seconds)), '--format', 'raw', '-o',
                    f'{path}-{kind}.txt', *flags],
                   capture_output=True, check=False)


def featurize_run(input_pattern: str, out: str, images: int,
                  extra: Sequence[str], env: Optional[dict] = None,
                  processes: int = 1, server: bool = False,
                  spy: Optional[str] = None,
                  memory_from: Optional[int] = None,
                  keep: Optional[str] = None) -> dict:
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
    spy: Where py-spy's stacks go (``_spy``), if py-spy is installed.
    memory_from: Also the peaks of host and GPU memory until this many
      images were written, or until every process had begun if that was
      later (``memory_until``, with the images written by then), to
      tell whether memory stays flat after it within the one run.
    keep: Move the output here instead of deleting it (replacing what
      is there), to compare it with another run's.
  """
  shutil.rmtree(out, ignore_errors=True)
  runner = (['--direct_running_mode=multi_processing',
             f'--direct_num_workers={processes}'] if processes > 1 else [])
  if server:
    runner.append('--large-model')
  command = [sys.executable, '-m', 'tests.support.peak_rss', 'run', '--config',
             os.path.join(ROOT, 'run_configs', 'local.yaml'), '--input',
             input_pattern, '--output', out, '--device', 'gpu', '--weights',
             'random', '--quiet', *extra, *runner]
  with GpuSampler() as sampler, ProgressSampler() as progress:
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    with TreeRssSampler(child.pid) as tree, ThreadCpuSampler(
        child.pid) as threads:
      if spy and shutil.which('py-spy'):
        threading.Thread(target=_spy, args=(child.pid, progress, images,
                                            spy, 3), daemon=True).start()
      stdout, stderr = child.communicate()
    wall = time.perf_counter() - started
  if child.returncode != 0:
    said = [line for line in stderr.splitlines()
            if line.startswith('featurize: error')]
    # A worker's own cause comes long before the shutdown's noise that
    # ends the log: its first lines that look like one.
    causes = [line for line in stderr.splitlines()
              if re.search(r'Error|RESOURCE_EXHAUSTED|Check failed|Fatal|'
                           r'[Oo]ut of memory|Segmentation|Aborted', line)]
    raise RuntimeError(f'featurize failed ({child.returncode}): '
                       f'{" ".join(said)}\n'
                       + '\n'.join(causes[:30])[-4000:] +
                       f'\n{stdout[-3000:]}\n{stderr[-3000:]}')
  rss = re.search(r'PEAK_RSS_KB (\d+)', stdout)
  steps = re.search(r'host time a GPU batch: (.*)', stdout)
  per_image = re.search(r'host time an image: (.*)', stdout)
  routed = re.search(r'decoded by nvJPEG ([\d.]+)%, by the CPU ([\d.]+)%(.*)',
                     stdout)
  first = re.search(r'first record after ([\d.]+) s', stdout)
  # How the processes shared the GPU (``mps.plan``'s line), if they did.
  sharing = re.search(r'featurize: (\d+ worker processes share the GPU.*)',
                      stdout)
  written = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)
                if f.startswith('features-'))
  if keep:
    shutil.rmtree(keep, ignore_errors=True)
    shutil.move(out, keep)
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
            'gpu_sharing': sharing.group(1) if sharing else None,
            'stdout': stdout.strip().splitlines()[-8:]}
  result.update(sampler.busy_summary())
  result.update(progress.summary())
  moment = progress.time_of(memory_from) if memory_from else None
  if moment is not None:
    # Not before every process has begun: a process not yet started
    # holds none of its memory, which would read as growth later.
    moment = max([moment] + [first for first, _ in progress.first_and_last()])
    gpu_offset = progress.started - sampler.started
    result['memory_until'] = {
        'images': progress.written_at(moment),
        'host_peak_rss_mib': round(tree.peak_until_kib(
            moment + progress.started - tree.started) / 1024, 1),
        'gpu_memory_peak_mib': max(
            (mib for t, _, mib in sampler.samples if t <= moment + gpu_offset),
            default=None)}
  span = progress.window()
  # The samplers' clocks start within milliseconds of each other.
  offset = threads.started - progress.started
  result['cores_by_thread'] = (threads.cores_by_thread(
      span[0] - offset, span[1] - offset) if span else {})
  print(f'end-to-end {" ".join(extra)} {images} images: {result}',
        flush=True)
  return result


def steady(run: dict) -> Optional[float]:
  """A run's steady images/s: its progress slope (``ProgressSampler``)."""
  return run.get('steady_images_per_s')


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
