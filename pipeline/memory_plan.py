"""``--memory-budget``: one worker process's memory, planned at launch.

From a budget per worker process (a size, or ``auto``: the machine's
limit divided among the worker processes the runner starts), the planner
picks what fits. It picks the batch size first, up to the device's
default. Then it picks the largest image that may be decoded
(``--max-pixels``), where the default would not fit. A setting that the
user gave is kept. If it cannot fit, the run is refused at launch with
one line saying what would fit.

It plans from a model of a worker's peak memory, each part measured on
the CPU path (docs/PERFORMANCE.md, "Choosing settings for a machine and
a memory budget"):

* the runtime: Python, Beam, TensorFlow and Keras imported, with the
  model's graph (``RUNTIME_BYTES``);
* the weights: every variable of the model that is built, float32 in
  either precision (Keras's mixed policy keeps variables float32;
  ``models.weights_bytes``);
* the activations of one image: block 1's two largest tensors, plus each
  kept output but the deepest (``models.activation_bytes``),
  times the measured overhead of TensorFlow's own buffers
  (``ACTIVATION_OVERHEAD``);
* decode buffers: the largest image allowed, at the worst measured cost
  per pixel (an RGBA PNG composited onto white, ``DECODE_BYTES_PER_PIXEL``),
  one for each thread that decodes;
* batches in flight: one for each worker thread of the process;
* decoding ahead: one small decode and a batch of decoded images for each
  worker thread (``ahead_bytes``);
* a margin (``MARGIN``) for what the model leaves out.

A thread's large decode and its batch are never held at once: the fused
stage takes one element at a time, and an image too large to decode
ahead (``decode_images.DECODE_AHEAD_BYTES``) is decoded on the thread
itself, after everything ahead of it has gone downstream. So a thread's
peak is the larger of its batch (with what it decodes ahead beside it,
``ahead_bytes``: one small decode and a batch of decoded images) and its
large decode, not their sum. ``benchmarks/memory_budget.py`` measured
this: with the sum, the predictions ran 11-16% above the measured peaks;
with the larger, they come within 3%.

The plan is printed in the run's first lines, recorded in the manifest
(``memory_plan``; under ``describe`` in a dataset version's) and shown by
``featurize inspect``.

Where the workers run (``Workers``, from the runner's options:
``topology.runner_workers``):

* locally, ``auto`` is this machine's memory (or its cgroup's limit)
  over the worker processes the DirectRunner starts;
* on Dataflow, ``auto`` is the machine type's memory, less what Dataflow
  keeps for its own processes (``DATAFLOW_RESERVED_BYTES``), over the SDK
  processes of a VM (one per vCPU, or one with
  ``no_use_multiple_sdk_containers``), each with
  ``number_of_worker_harness_threads`` threads;
* on Flink, a budget is a size per SDK worker process (the worker pool's
  limit over ``sdk_worker_parallelism``: the launcher cannot see the
  pool's container), and the threads are a TaskManager's slots, read
  from Flink's REST API (``flink_master``).

With ``--large-model``, one process per machine holds the model for the
worker processes (Beam's shared-model process): its runtime and weights
come off the machine's memory before it is divided, and a worker holds no
weights. ``--device gpu`` is refused: its batches live in the GPU's
memory.

What the run leaves open, the planner chooses (``plan_layout``): the
worker processes of a local run with ``direct_num_workers`` 0 (one per
core), the threads of a Dataflow SDK process without
``number_of_worker_harness_threads``, and, with ``auto``, ``--large-model``
where it is not given. It takes the layout with the most workers that
each hold a full batch, and adds the Beam flags that set it. A given
count that cannot fit is refused with the count that would.
"""
import dataclasses
import math
import re
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

from transforms.decode import decode_images, imaging
from transforms.extract import models

MIB = 1 << 20
GIB = 1 << 30
# Python, Beam, TensorFlow and Keras imported, with the model built and
# the pipeline running, less the weights and the batch or decode: taken
# from the planned runs of benchmarks/memory_budget.py (VGG16, ResNet50,
# InceptionV3 and EfficientNetB0), whose runtimes spread over about
# 0.1 GiB (a deeper graph holds more objects), so the middle of that
# spread keeps every model within 5% of its plan.
RUNTIME_BYTES = 880 * MIB
# What a batch costs per image beyond the activations' own values: at
# batch 16, 33 MB an image in float32 against 25.7 MB of block-1
# activations, 16 MB against 12.8 MB in bfloat16 (docs/PERFORMANCE.md).
ACTIVATION_OVERHEAD = 1.3
# The worst measured decode cost per pixel (an RGBA PNG composited onto
# white; ``imaging.DECODE_BYTES_PER_PIXEL`` says how it was measured).
DECODE_BYTES_PER_PIXEL = imaging.DECODE_BYTES_PER_PIXEL
# A budget that cannot hold a decode of this many pixels is refused
# (12 MP is a phone's photo).
MIN_PLANNED_PIXELS = 12_000_000
MARGIN = 0.10

# What Dataflow keeps of a worker VM for the OS and its own processes:
# "typically no larger than 1 GB" (Dataflow's guide "Troubleshoot
# Dataflow out of memory errors", worker operational memory).
DATAFLOW_RESERVED_BYTES = GIB
# Compute Engine's memory per vCPU (GiB) by machine family and kind;
# families not listed are refused for ``auto`` (give a size instead).
_PER_VCPU_GIB: Dict[str, Dict[str, float]] = {
    'n1': {'standard': 3.75, 'highmem': 6.5, 'highcpu': 0.9},
    **{family: {'standard': 4, 'highmem': 8, 'highcpu': 1}
       for family in ('n2', 'n2d', 'e2', 't2d', 'c2')},
    **{family: {'standard': 4, 'highmem': 8, 'highcpu': 2}
       for family in ('c2d', 'c3', 'c3d', 'c4', 'c4a', 'c4d', 'n4', 'n4d')},
}
_SHARED_CORE = {'e2-micro': (2, 1.0), 'e2-small': (2, 2.0),
                'e2-medium': (2, 4.0), 'f1-micro': (1, 0.6),
                'g1-small': (1, 1.7)}
_PREDEFINED = re.compile(r'^([a-z][a-z0-9]*)-(standard|highmem|highcpu)-'
                         r'(\d+)(?:-lssd)?$')
_CUSTOM = re.compile(r'^(?:([a-z][a-z0-9]*)-)?custom-(\d+)-(\d+)(?:-ext)?$')

_SIZE = re.compile(r'^\s*([0-9]*\.?[0-9]+)\s*([KMGT]i?B?|B)?\s*$', re.I)
_UNITS = {'': 1, 'B': 1, 'K': 1 << 10, 'M': MIB, 'G': GIB, 'T': 1 << 40}


def parse_size(text: str) -> int:
  """Bytes from ``6GiB``, ``1.5G``, ``700MB``, ``512M`` or a plain number
  (binary units throughout: a budget is compared with binary sizes).

  Raises:
    ValueError: not a size.
  """
  match = _SIZE.match(text or '')
  if not match:
    raise ValueError(f'--memory-budget: {text!r} is not a size (6GiB, '
                     '1.5GiB, 700MiB) or auto')
  unit = (match.group(2) or '').upper()[:1]
  return int(float(match.group(1)) * _UNITS[unit])


def machine_memory(read=open) -> int:
  """What this machine (or its container) lets a job use: the cgroup's
  memory limit where one is set, otherwise the machine's memory."""
  for path in ('/sys/fs/cgroup/memory.max',
               '/sys/fs/cgroup/memory/memory.limit_in_bytes'):
    try:
      with read(path) as f:
        value = f.read().strip()
    except OSError:
      continue
    # cgroup v2 says 'max'; v1 says a huge number when there is no limit.
    if value.isdigit() and int(value) < (1 << 60):
      return int(value)
  with read('/proc/meminfo') as f:
    for line in f:
      if line.startswith('MemTotal:'):
        return int(line.split()[1]) * 1024
  raise OSError('no MemTotal in /proc/meminfo')


def is_auto(text: str) -> bool:
  """Whether a ``--memory-budget`` value is ``auto`` (any case)."""
  return text.strip().lower() == 'auto'


def machine_type_size(machine_type: str) -> Tuple[int, int]:
  """``(vCPUs, bytes)`` of a Compute Engine machine type: predefined
  (``n2-standard-8``), custom (``custom-4-16384``, ``n2-custom-4-16384``)
  or shared-core (``e2-medium``).

  Raises:
    ValueError: a type this table does not know.
  """
  name = (machine_type or '').strip().lower().rsplit('/', 1)[-1]
  if name in _SHARED_CORE:
    cpus, gib = _SHARED_CORE[name]
    return cpus, int(gib * GIB)
  custom = _CUSTOM.match(name)
  if custom:
    return int(custom.group(2)), int(custom.group(3)) * MIB
  predefined = _PREDEFINED.match(name)
  if predefined and predefined.group(2) in _PER_VCPU_GIB.get(
      predefined.group(1), {}):
    cpus = int(predefined.group(3))
    per = _PER_VCPU_GIB[predefined.group(1)][predefined.group(2)]
    return cpus, int(cpus * per * GIB)
  raise ValueError(f'--memory-budget auto: machine type {machine_type!r} is '
                   'not one featurize knows the memory of; give a size per '
                   'SDK process instead (--memory-budget 3GiB)')


@dataclasses.dataclass(frozen=True)
class Workers:
  """Where a run's worker processes live, as its runner's options say.

  Attributes:
    where: The runner and machine, for the plan's line.
    processes: Worker processes on one machine.
    threads: Worker threads in one process, each with a batch in flight.
    memory: The machine's memory that ``auto`` divides, or None where the
      launcher cannot know it (then ``why_unknown`` says why).
    reserved: Bytes of it that the runner keeps for itself.
    why_unknown: Why ``memory`` is None.
    processes_flag: The Beam option that sets ``processes``, where
      featurize can set it ('' where the runner or cluster does).
    threads_flag: Likewise for ``threads``.
    most_processes: Above 0 where the run leaves the process count open
      (``direct_num_workers`` 0, "one per core"): the planner picks up to
      this many.
    most_threads: Likewise for threads (Dataflow without
      ``number_of_worker_harness_threads``).
  """
  where: str
  processes: int
  threads: int
  memory: Optional[int] = None
  reserved: int = 0
  why_unknown: str = ''
  processes_flag: str = ''
  threads_flag: str = ''
  most_processes: int = 0
  most_threads: int = 0


def _gib(value: int) -> str:
  return f'{value / GIB:.2f}'


def _gib_up(value: int) -> str:
  """GiB rounded up to the hundredth: a budget of that size holds it."""
  return f'{math.ceil(value / GIB * 100) / 100:.2f}'


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
  """What one worker process holds, and the settings that make it fit.

  Attributes:
    budget: Bytes one worker process may use.
    source: Where the budget came from (the flag's value, or how ``auto``
      found it).
    batch_size: Images a model call.
    threads: Worker threads in the process, each with a batch in flight
      and an image decoding.
    max_pixels: The largest image decoded (``--max-pixels``).
    runtime: Bytes of the runtime (``RUNTIME_BYTES``).
    weights: Bytes of the model's weights.
    per_image: Bytes one image adds to a batch.
    decode: Bytes of the decode buffers (all threads; a thread's decode
      and its batch are not held at once).
    ahead: Bytes a thread's decoding ahead adds
      (``decode_images.ahead_bytes``): held beside its batch.
    margin: The share of the budget left unplanned.
    processes: Worker processes on the machine.
    chosen: The layout settings the planner chose because the run left
      them open (``--large-model``, Beam's worker counts), as flags.
  """
  budget: int
  source: str
  batch_size: int
  threads: int
  max_pixels: int
  runtime: int
  weights: int
  per_image: int
  decode: int
  ahead: int = 0
  margin: float = MARGIN
  processes: int = 1
  chosen: Tuple[str, ...] = ()

  @property
  def predicted_peak(self) -> int:
    """The worker's peak memory as planned (without the margin): each
    thread holds its batch and what it decodes ahead, or its large
    decode, whichever is larger."""
    return self.runtime + self.weights + self.threads * max(
        self.batch_size * self.per_image + self.ahead,
        self.decode // self.threads)

  def line(self) -> str:
    """The run's first line about memory."""
    return (f'memory plan: {_gib(self.budget)} GiB per worker ({self.source}): '
            f'model {_gib(self.weights) if self.weights else "shared"}, '
            f'runtime {_gib(self.runtime)}, '
            f'{self.threads} thread(s) x batch {self.batch_size} x '
            f'{self.per_image / 1e6:.0f} MB, decode {_gib(self.decode)} '
            f'(--max-pixels {self.max_pixels:,}), decoding ahead '
            f'{self.ahead / MIB:.0f} MiB a thread, margin '
            f'{self.margin:.0%}; predicted peak '
            f'{_gib(self.predicted_peak)} GiB' +
            (f'; planned {" ".join(self.chosen)}' if self.chosen else ''))

  def describe(self) -> dict:
    """The plan for the manifest."""
    out = dataclasses.asdict(self)
    out['predicted_peak'] = self.predicted_peak
    return out


def weights_bytes(model: models.ModelConfig) -> int:
  """The built model's variables, float32 in either precision."""
  return models.weights_bytes(model)


def ahead_bytes(model: models.ModelConfig, batch_size: int) -> int:
  """What decoding a batch ahead adds to a worker thread (the CPU path's
  ``DecodeImages``, as ``ExtractFeatures`` sets it up)."""
  return decode_images.ahead_bytes(batch_size, model.image_size)


def per_image_bytes(model: models.ModelConfig) -> int:
  """What one more image in a batch costs (see module docstring)."""
  return int(models.activation_bytes(model) * ACTIVATION_OVERHEAD)


class BudgetError(ValueError):
  """A budget that cannot hold the run, or a flag that does not fit it."""


def plan(budget: int, source: str, model: models.ModelConfig,
         decode: imaging.DecodeConfig, threads: int = 1,
         batch_given: bool = False, pixels_given: bool = False
         ) -> MemoryPlan:
  """Plans one worker process within ``budget`` bytes.

  Args:
    budget: Bytes per worker process.
    source: Where the budget came from, for the plan's line.
    model: The model settings (its ``batch_size`` is the device's default
      or the user's).
    decode: The decode settings (``max_pixels`` likewise).
    threads: Worker threads in the process.
    batch_given: The user set ``--batch-size``: keep it or refuse.
    pixels_given: The user set ``--max-pixels``: keep it or refuse.

  Raises:
    BudgetError: the budget cannot hold the runtime, the weights and one
      image, or a given flag does not fit; the message says what would.
  """
  if model.device != 'cpu':
    raise BudgetError('--memory-budget plans --device cpu workers; on a '
                      'GPU the batch lives in the GPU\'s memory')
  # With --large-model the machine's model process holds the weights
  # (budget_of takes it off the machine first).
  runtime = RUNTIME_BYTES
  weights = 0 if model.large_model else weights_bytes(model)
  per_image = per_image_bytes(model)
  wanted_batch = models.effective_batch_size(model)
  # Decoding ahead is held beside a batch (at most the wanted batch's
  # images ahead: a smaller batch decodes fewer ahead).
  ahead = ahead_bytes(model, wanted_batch)
  usable = int(budget * (1 - MARGIN))
  room = usable - runtime - weights
  smallest_pixels = min(decode.max_pixels, MIN_PLANNED_PIXELS)
  if pixels_given:
    smallest_pixels = decode.max_pixels
  smallest_batch = wanted_batch if batch_given else 1
  least = threads * max(smallest_batch * per_image + ahead,
                        smallest_pixels * DECODE_BYTES_PER_PIXEL)
  if room < least:
    raise _too_small(budget, source, model, decode, threads, batch_given,
                     pixels_given, weights, ahead, least)
  # A thread holds its batch (with what it decodes ahead) or its large
  # decode: each may take the thread's whole room. The batch up to the
  # device's default, then the largest decode that fits.
  batch = wanted_batch
  if not batch_given:
    batch = max(1, min(wanted_batch,
                       (room - threads * ahead) // (threads * per_image)))
  max_pixels = decode.max_pixels
  if not pixels_given:
    max_pixels = int(min(decode.max_pixels,
                         room // (threads * DECODE_BYTES_PER_PIXEL)))
  return MemoryPlan(budget=budget, source=source, batch_size=batch,
                    threads=threads, max_pixels=max_pixels,
                    runtime=runtime, weights=weights, per_image=per_image,
                    decode=threads * max_pixels * DECODE_BYTES_PER_PIXEL,
                    ahead=ahead_bytes(model, batch))


def _too_small(budget: int, source: str, model: models.ModelConfig,
               decode: imaging.DecodeConfig, threads: int, batch_given: bool,
               pixels_given: bool, weights: int, ahead: int,
               least: int) -> BudgetError:
  """Why ``budget`` cannot hold a worker of ``threads`` threads that needs
  ``least`` bytes beside the runtime, ``weights`` and each thread's
  ``ahead``: the flags given that do not fit and what would, or the
  smallest budget that works."""
  runtime = RUNTIME_BYTES
  per_image = per_image_bytes(model)
  room = int(budget * (1 - MARGIN)) - runtime - weights
  needed = math.ceil((runtime + weights + least) / (1 - MARGIN))
  given = []
  if batch_given:
    given.append(f'--batch-size {model.batch_size}')
  if pixels_given:
    given.append(f'--max-pixels {decode.max_pixels:,}')
  bare = threads * max(per_image + ahead,
                       MIN_PLANNED_PIXELS * DECODE_BYTES_PER_PIXEL)
  if given and room >= bare:
    # The budget holds a worker, not with the flags given: say what fits.
    pixels = decode.max_pixels if pixels_given else MIN_PLANNED_PIXELS
    fits = []
    if batch_given and pixels * DECODE_BYTES_PER_PIXEL * threads <= room:
      most_batch = (room - threads * ahead) // (threads * per_image)
      fits.append(f'--batch-size {most_batch}')
    wanted_batch = models.effective_batch_size(model)
    if pixels_given and threads * ((wanted_batch if batch_given else 1) *
                                   per_image + ahead) <= room:
      most = room // (threads * DECODE_BYTES_PER_PIXEL)
      fits.append(f'--max-pixels {most:,}')
    return BudgetError(
        f'--memory-budget of {_gib(budget)} GiB ({source}) cannot hold '
        f'{" and ".join(given)}: {" or ".join(fits) or "neither"} would '
        f'fit, or a budget of {_gib_up(needed)} GiB')
  smallest_batch = models.effective_batch_size(model) if batch_given else 1
  smallest_pixels = (decode.max_pixels if pixels_given else
                     min(decode.max_pixels, MIN_PLANNED_PIXELS))
  return BudgetError(
      f'--memory-budget of {_gib(budget)} GiB ({source}) cannot hold a '
      f'worker: the runtime ({_gib(runtime)} GiB), the weights '
      f'({_gib(weights)} GiB), {threads} thread(s) of a batch of '
      f'{smallest_batch} at {per_image / 1e6:.0f} MB an image with '
      f'decoding ahead ({_gib(ahead)} GiB), or of a '
      f'{smallest_pixels / 1e6:.0f}-megapixel decode, need '
      f'{_gib_up(needed)} GiB at least')


class Layout(NamedTuple):
  """A planned worker process and the layout it was planned for.

  Attributes:
    plan: The worker process's plan.
    large_model: Whether the machine's processes share one model.
    beam_flags: Beam options that set what the planner chose of the
      worker counts (to add after the run's own).
  """
  plan: MemoryPlan
  large_model: bool
  beam_flags: Tuple[str, ...]


def _counts(given: int, most: int) -> List[int]:
  return list(range(most, 0, -1)) if most else [given]


def _open_layouts(text: str, workers: Workers, model: models.ModelConfig,
                  large_model_given: bool
                  ) -> Iterator[Tuple[int, int, bool]]:
  """``(processes, threads, large_model)`` of every layout the run leaves
  open (``plan_layout``)."""
  shared_choices = [model.large_model]
  if (not large_model_given and model.device == 'cpu' and
      is_auto(text) and workers.memory is not None):
    shared_choices = [False, True]
  for processes in _counts(workers.processes, workers.most_processes):
    for threads in _counts(workers.threads, workers.most_threads):
      for shared in shared_choices:
        if shared and processes < 2 and shared != model.large_model:
          continue  # a model process for one worker saves nothing
        yield processes, threads, shared


def plan_layout(text: str, workers: Workers, model: models.ModelConfig,
                decode: imaging.DecodeConfig, batch_given: bool = False,
                pixels_given: bool = False,
                large_model_given: bool = True) -> Layout:
  """Plans a worker process and, where the run leaves them open, how many
  worker processes and threads there are and whether they share one
  model (``--large-model``).

  Open are: the process or thread count where ``workers`` says so
  (``most_processes``, ``most_threads``), and, with ``auto`` on a
  machine of several worker processes and ``--device cpu``,
  ``--large-model`` unless given: one model process per machine costs a
  runtime and the weights once, and saves the weights in every worker
  process (worth it with the top's 553 MB, rarely for the 59 MB without).

  Of the layouts that fit, the planner takes the one whose workers all
  hold a full batch (the device's default, or ``--batch-size``) with the
  most workers (processes x threads); if none holds a full batch, the
  largest batch. Then the larger decode bound, then no shared model.

  Raises:
    BudgetError: no layout fits (the message is the smallest layout's,
      which names the smallest budget that works), or a given worker
      count does not fit (the message says which count would).
  """
  wanted_batch = models.effective_batch_size(model)
  best, best_key, errors = None, None, {}
  for processes, threads, shared in _open_layouts(text, workers, model,
                                                  large_model_given):
    layout = dataclasses.replace(workers, processes=processes,
                                 threads=threads)
    candidate = dataclasses.replace(model, large_model=shared)
    try:
      budget, source = budget_of(text, layout, candidate)
      planned = plan(budget, source, candidate, decode, threads,
                     batch_given=batch_given, pixels_given=pixels_given)
    except BudgetError as e:
      errors[processes, threads, shared] = e
      continue
    # Workers that all hold a full batch, the most of them; else the
    # largest batch. Then the larger decode bound, then no shared model.
    full = planned.batch_size >= wanted_batch
    key = (full, processes * threads if full else planned.batch_size,
           planned.batch_size, planned.max_pixels, not shared)
    if best_key is None or key > best_key:
      best_key = key
      best = (planned, shared, processes, threads)
  if best is None:
    # The smallest layout's error, with the model as the run has it: its
    # message names the smallest budget that works.
    smallest = min(errors, key=lambda k: (k[0], k[1],
                                          k[2] != model.large_model))
    hint = _fewer_hint(text, workers, model, decode, batch_given,
                       pixels_given)
    raise BudgetError(f'{errors[smallest]}{hint}')
  planned, shared, processes, threads = best
  chosen, flags = [], []
  if shared != model.large_model:
    chosen.append('--large-model')
  if workers.most_processes:
    flags.append(f'--{workers.processes_flag}={processes}')
  if workers.most_threads:
    flags.append(f'--{workers.threads_flag}={threads}')
  return Layout(dataclasses.replace(planned, processes=processes,
                                    chosen=tuple(chosen + flags)),
                shared, tuple(flags))


def _fewer_hint(text: str, workers: Workers, model: models.ModelConfig,
                decode: imaging.DecodeConfig, batch_given: bool,
                pixels_given: bool) -> str:
  """'; N worker processes would fit (--flag=N)' where a given count does
  not fit: the count ``plan_layout`` would pick were it open, below the
  given one ('' where none fits, or the count is not featurize's)."""
  tries = []
  if (workers.processes_flag and not workers.most_processes and
      workers.processes > 1 and is_auto(text)):
    tries.append(('processes', workers.processes_flag, workers.processes))
  if (workers.threads_flag and not workers.most_threads and
      workers.threads > 1):
    tries.append(('threads', workers.threads_flag, workers.threads))
  for name, flag, given in tries:
    opened = (dataclasses.replace(workers, most_processes=given - 1)
              if name == 'processes' else
              dataclasses.replace(workers, most_threads=given - 1))
    try:
      layout = plan_layout(text, opened, model, decode, batch_given,
                           pixels_given)
    except BudgetError:
      continue
    count = layout.plan.processes if name == 'processes' else (
        layout.plan.threads)
    what = 'worker processes' if name == 'processes' else 'threads'
    return f'; {count} {what} would fit (--{flag}={count})'
  return ''


def budget_of(text: str, workers: Workers,
              model: Optional[models.ModelConfig] = None) -> Tuple[int, str]:
  """``(bytes per worker process, where it came from)`` for the flag's
  value: a size (per worker process), or ``auto``: the machine's memory,
  less the runner's share and, with ``--large-model``, the model's own
  process, over ``workers.processes``.

  Raises:
    BudgetError: ``auto`` where the machine's memory is not known, or
      that leaves nothing.
  """
  if not is_auto(text):
    return parse_size(text), f'given, {workers.where}'
  if workers.memory is None:
    raise BudgetError(f'--memory-budget auto: {workers.why_unknown}; give '
                      'a size per worker process instead (--memory-budget '
                      '4GiB)')
  server = shared_model_bytes(model) if model is not None else 0
  left = workers.memory - workers.reserved - server
  parts = [f'auto: {workers.where}, {_gib(workers.memory)} GiB']
  if workers.reserved:
    parts.append(f'less {_gib(workers.reserved)} for the runner')
  if server:
    parts.append(f'less {_gib(server)} for the shared model\'s process')
  if left <= 0:
    raise BudgetError(f'--memory-budget {", ".join(parts)} leaves nothing '
                      'for the worker processes')
  return (left // max(1, workers.processes),
          f'{", ".join(parts)}, over {workers.processes} worker '
          f'process(es) of {workers.threads} thread(s)')


def shared_model_bytes(model: models.ModelConfig) -> int:
  """What ``--large-model``'s one model process per machine holds: a
  runtime and the weights (0 without ``--large-model``)."""
  if not model.large_model:
    return 0
  return RUNTIME_BYTES + weights_bytes(model)
