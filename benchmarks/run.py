"""``python -m benchmarks.run``: the benchmark, with PASS/FAIL per target.

Makes its own images, runs every contender in a process of its own, and
writes ``benchmarks/results/``: ``measurements.jsonl`` (every run),
``summary.json``, ``RESULTS.md`` (the table and the targets) and PNG plots.
Every figure is the median of ``--repeats`` runs; every comparison is a
ratio of figures measured in this one invocation on this machine.

Throughput is steady-state, fixed costs (imports, model load, the first
batch's graph building) left out, since time to first record is reported
on its own:

* ``bare`` (the ceiling) times its own loop over tensors in memory, after
  the first call.
* ``featurize`` streams its records, so it is timed from outside: from the
  first record on disk to ``_SUCCESS``, for all images but the first batch.
* ``naive`` and ``stock`` write nothing until the end, so theirs is
  marginal: (N_large - N_small) / (T_large - T_small) from two runs.
"""
import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional

from benchmarks import dataset, measure, report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Bench:
  """Runs and records measurements; one per (contender, setting, repeat)."""

  def __init__(self, work: str, results: str, images: Dict[str, str],
               log: str = ''):
    self.work = work
    self.results = results
    self.images = images
    self.log = log or os.path.join(results, 'measurements.jsonl')
    self.rows: List[dict] = []
    os.makedirs(results, exist_ok=True)

  def run(self, name: str, *, count: int, images: str = 'imagenet',
          precision: str = 'float32', workers: int = 1,
          batch_size: int = 16, repeat: int = 0,
          model: str = 'vgg16') -> dict:
    out = os.path.join(self.work, f'out-{name}-{count}-{time.time_ns()}')
    command = measure.python_command(
        'benchmarks.contenders', name, '--images', self.images[images],
        '--count', str(count), '--output', out, '--precision', precision,
        '--batch-size', str(batch_size), '--workers', str(workers),
        '--model', model)
    # The first record on disk: a bundle's temporary file or, where a run
    # is so short that it was published between two samples, a final one.
    first_globs = [os.path.join(out, 'features', '.temp-featurize-*',
                                'features-*'),
                   os.path.join(out, 'features', 'features-*')]
    result = measure.run_measured(
        command, cwd=ROOT, first_output_glob=first_globs,
        done_glob=os.path.join(out, 'features', '_SUCCESS'))
    row = {'contender': name, 'model': model, 'count': count,
           'images': images,
           'precision': precision, 'workers': workers,
           'batch_size': batch_size, 'repeat': repeat,
           'wall_s': round(result.wall_s, 3),
           'peak_rss_mb': round(result.peak_rss_mb, 1),
           'peak_rss_by_process_mb': [round(v, 1) for v in
                                      result.peak_rss_by_process_mb],
           'first_output_s': result.first_output_s,
           'done_s': result.done_s, **result.report}
    if name == 'featurize':
      row['features_dir'] = os.path.join(out, 'features')
    else:
      shutil.rmtree(out, ignore_errors=True)
    self.rows.append(row)
    with open(self.log, 'a') as f:
      f.write(json.dumps(row) + '\n')
    print(f'  {name:17s} {precision:8s} w={workers} n={count:5d} '
          f'{images:8s} wall {row["wall_s"]:7.1f}s peak '
          f'{row["peak_rss_mb"]:7.0f} MB', flush=True)
    return row


def streaming_throughput(row: dict) -> Optional[float]:
  """Images/s from the first record on disk to ``_SUCCESS``."""
  if row.get('first_output_s') is None or row.get('done_s') is None:
    return None
  return (row['count'] - row['batch_size']) / max(
      1e-9, row['done_s'] - row['first_output_s'])


def marginal_throughput(small: dict, large: dict) -> float:
  return (large['count'] - small['count']) / max(
      1e-9, large['wall_s'] - small['wall_s'])


def median(values: List[float]) -> Optional[float]:
  values = [v for v in values if v is not None]
  return statistics.median(values) if values else None


METHODS = {'bare': 'own loop, after the first call',
           'featurize': 'first record on disk to _SUCCESS',
           'naive': 'marginal over two sizes',
           'stock': 'marginal over two sizes'}


def throughput_suite(bench: Bench, args) -> Dict[str, dict]:
  """Images/s of every contender, median over repeats."""
  configs = [('bare', 'float32', 1), ('bare', 'bfloat16', 1),
             ('featurize', 'float32', 1), ('featurize', 'bfloat16', 1),
             ('featurize', 'float32', 2), ('featurize', 'bfloat16', 2),
             ('naive', 'float32', 1), ('naive', 'bfloat16', 1),
             ('stock', 'float32', 1), ('stock', 'bfloat16', 1)]
  table = {}
  for name, precision, workers in configs:
    label = f'{name} {precision}' + (f' x{workers}' if workers > 1 else '')
    print(f'throughput: {label}', flush=True)
    speeds, first = [], []
    # naive and stock are slow and no target rests on them: 3 repeats do.
    repeats = args.repeats if name in ('bare', 'featurize') else min(
        args.repeats, 3)
    for repeat in range(repeats):
      if name == 'bare':
        row = bench.run(name, count=args.large, precision=precision,
                        batch_size=args.batch_size, repeat=repeat)
        speeds.append(row['loop_images_per_s'])
        first.append(row['t_first_record'])
        continue
      if name == 'featurize':
        row = bench.run(name, count=args.large, precision=precision,
                        workers=workers, batch_size=args.batch_size,
                        repeat=repeat)
        speeds.append(streaming_throughput(row))
        first.append(row['first_output_s'])
        continue
      small = bench.run(name, count=args.small, precision=precision,
                        workers=workers, batch_size=args.batch_size,
                        repeat=repeat)
      large = bench.run(name, count=args.large, precision=precision,
                        workers=workers, batch_size=args.batch_size,
                        repeat=repeat)
      speeds.append(marginal_throughput(small, large))
      first.append(small.get('first_output_s') or small.get('t_first_record'))
    table[label] = {'contender': name, 'precision': precision,
                    'workers': workers, 'images_per_s': median(speeds),
                    'runs': speeds, 'time_to_first_record_s': median(first),
                    'method': METHODS[name]}
  return table


# The models the CPU speed target covers: each end to end against the
# same model's bare loop, in the same invocation.
SPEED_MODELS = ('vgg16', 'resnet50', 'efficientnetb0', 'inceptionv3')


def images_for(rate: float, seconds: float, least: int, most: int,
               batch_size: int) -> int:
  """Whole batches of images that keep a model ``seconds`` busy at
  ``rate`` images/s, within [least, most]."""
  wanted = math.ceil(rate * seconds / batch_size) * batch_size
  return max(least, min(most // batch_size * batch_size, wanted))


def models_suite(bench: Bench, args) -> Dict[str, dict]:
  """Images/s of featurize and of the bare model, float32, for each of
  ``SPEED_MODELS`` at its own input size and feature layer.

  The images are ``--models-profile``'s (``benchmarks.gpu.profiles``):
  sizes, encodings and formats that vary as a real dataset's do, which
  the bare model never sees (it is given decoded tensors) and featurize
  decodes on the way.

  Each model gets as many images as keep its bare loop busy for
  ``--model-seconds`` (at least ``--large``), from one bare run of
  ``--large`` images first: a light model's 256 images last a few
  seconds, against which the fixed costs around a run's last record (its
  publish step) and this machine's drift weigh more than on VGG16.
  """
  table = {}
  for model in SPEED_MODELS:
    print(f'models: {model}', flush=True)
    probe = bench.run('bare', count=args.large, batch_size=args.batch_size,
                      repeat=-1, model=model, images='models')
    count = images_for(probe['loop_images_per_s'], args.model_seconds,
                       args.large, args.images_made, args.batch_size)
    bare, ours = [], []
    for repeat in range(args.repeats):
      row = bench.run('bare', count=count, batch_size=args.batch_size,
                      repeat=repeat, model=model, images='models')
      bare.append(row['loop_images_per_s'])
      row = bench.run('featurize', count=count, batch_size=args.batch_size,
                      repeat=repeat, model=model, images='models')
      ours.append(streaming_throughput(row))
    table[model] = {'images': count,
                    'bare_images_per_s': median(bare),
                    'featurize_images_per_s': median(ours),
                    'bare_runs': bare, 'featurize_runs': ours}
  return table


def memory_suite(bench: Bench, args) -> Dict[str, dict]:
  """Peak RSS against the number of images and against resolution.

  ``by_count`` and ``by_resolution`` hold the medians; ``runs`` every
  repeat's peak, under the same keys, so the spread is on record.
  """
  medians = {'by_count': {}, 'by_resolution': {}}
  runs = {'by_count': {}, 'by_resolution': {}}

  def measure_peak(table, name, key, **kwargs):
    peaks = [bench.run(name, precision='bfloat16', repeat=r,
                       **kwargs)['peak_rss_mb']
             for r in range(args.memory_repeats)]
    runs[table].setdefault(name, {})[key] = peaks
    medians[table].setdefault(name, {})[key] = median(peaks)

  for name in ('featurize', 'naive', 'stock'):
    print(f'memory vs images: {name}', flush=True)
    for count in args.memory_counts:
      measure_peak('by_count', name, count, count=count,
                   batch_size=args.batch_size)
  print('memory vs images: naive_all_layers', flush=True)
  for count in args.all_layers_counts:
    measure_peak('by_count', 'naive_all_layers', count, count=count,
                 batch_size=args.batch_size)
  for name in ('featurize', 'naive'):
    print(f'memory vs resolution: {name}', flush=True)
    for images in ('imagenet', '12mp', '24mp'):
      measure_peak('by_resolution', name, images,
                   count=args.resolution_count, images=images, batch_size=4)
  return {**medians, 'runs': runs}


def bfloat16_agreement(bench: Bench, args) -> dict:
  """Cosine similarity of bfloat16 to float32 features, per image."""
  runs = {p: bench.run('featurize', count=args.small, precision=p,
                       batch_size=args.batch_size)
          for p in ('float32', 'bfloat16')}
  # In a fresh process: the tfrecord reader must not meet TensorFlow.
  script = (
      'import json, sys, numpy as np\n'
      'from pipeline.read_features import iter_features\n'
      'a = {r.key: r.features.ravel() for r in iter_features(sys.argv[1])}\n'
      'b = {r.key: r.features.ravel() for r in iter_features(sys.argv[2])}\n'
      'print(json.dumps({k: float(a[k] @ b[k] / np.linalg.norm(a[k]) / '
      'np.linalg.norm(b[k])) for k in a}))\n')
  import subprocess
  output = subprocess.run(
      [sys.executable, '-c', script, runs['float32']['features_dir'],
       runs['bfloat16']['features_dir']], cwd=ROOT, check=True,
      capture_output=True, text=True).stdout
  cosines = sorted(json.loads(output).values())
  return {'images': len(cosines), 'min': cosines[0],
          'p05': cosines[int(0.05 * (len(cosines) - 1))],
          'median': statistics.median(cosines), 'max': cosines[-1]}


def parse_args(argv):
  parser = argparse.ArgumentParser(prog='python -m benchmarks.run')
  parser.add_argument('--only', choices=('models',),
                      help='models: only the per-model speed suite '
                      '(writes models.json).')
  parser.add_argument('--quick', action='store_true',
                      help='A few images and one repeat: checks that every '
                      'contender runs, in about a minute. Numbers are noise.')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--batch-size', type=int, default=16,
                      help='Every contender\'s batch size (the resolution '
                      'runs use 4: 24 MP photos).')
  parser.add_argument('--model-seconds', type=float, default=30,
                      help='--only models: images enough to keep each '
                      'bare model busy this long (at least --large).')
  parser.add_argument('--models-profile', default='imagenet',
                      choices=('imagenet', 'web', 'uniform'),
                      help='--only models: the images\' profile '
                      '(benchmarks.gpu.profiles).')
  parser.add_argument('--small', type=int, default=32)
  parser.add_argument('--large', type=int, default=256)
  parser.add_argument('--memory-counts', type=int, nargs='+',
                      default=[200, 2000])
  parser.add_argument('--memory-repeats', type=int, default=3)
  parser.add_argument('--all-layers-counts', type=int, nargs='+',
                      default=[16, 64])
  parser.add_argument('--resolution-count', type=int, default=16)
  parser.add_argument('--work', default=os.path.join(tempfile.gettempdir(),
                                                     'featurize-bench'))
  parser.add_argument('--results', default=os.path.join(ROOT, 'benchmarks',
                                                        'results'))
  args = parser.parse_args(argv)
  if args.quick:
    # Batches of 2, so that even 8 images have a steady state to time.
    args.repeats, args.small, args.large, args.batch_size = 1, 4, 8, 2
    args.memory_counts, args.memory_repeats = [4, 8], 1
    args.all_layers_counts, args.resolution_count = [2], 2
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  os.makedirs(args.results, exist_ok=True)
  most = max([args.large] + args.memory_counts)
  args.images_made = most
  if args.only == 'models':
    return _models_only(args, most)
  if os.path.exists(os.path.join(args.results, 'measurements.jsonl')):
    os.remove(os.path.join(args.results, 'measurements.jsonl'))
  print(f'making {most} ImageNet-sized and {args.resolution_count} '
        '12/24-megapixel JPEGs ...', flush=True)
  images = {
      'imagenet': os.path.join(args.work, 'imagenet'),
      '12mp': os.path.join(args.work, '12mp'),
      '24mp': os.path.join(args.work, '24mp'),
  }
  dataset.write_image_folder(images['imagenet'], most)
  dataset.write_image_folder(images['12mp'], args.resolution_count,
                             (4000, 3000))
  dataset.write_image_folder(images['24mp'], args.resolution_count,
                             (6000, 4000))
  bench = Bench(args.work, args.results, images)
  started = time.time()
  summary = {
      'machine': measure.machine(),
      'settings': {k: v for k, v in vars(args).items()
                   if k not in ('work', 'results')},
      'dataset': dataset.describe_folders(images),
      'throughput': throughput_suite(bench, args),
      'memory': memory_suite(bench, args),
      'bfloat16_vs_float32_cosine': bfloat16_agreement(bench, args),
  }
  summary['targets'] = report.targets(summary)
  summary['duration_s'] = round(time.time() - started)
  status = report.write_results(args.results, summary,
                                report.markdown(summary))
  report.plots(summary, args.results)
  return status


def _models_only(args, most: int) -> int:
  """``--only models``: the per-model suite on ``most`` images of
  ``--models-profile``, its targets printed and written to
  ``models.json``."""
  folder = os.path.join(args.work, f'models-{args.models_profile}')
  print(f'making {most} images of the {args.models_profile} profile ...',
        flush=True)
  stats = dataset.write_profile_folder(folder, most, args.models_profile)
  print(f'  {stats}', flush=True)
  # Every run's row goes to the work folder: the results' own
  # measurements.jsonl is the full benchmark's (models.json holds these).
  log = os.path.join(args.work, 'models-measurements.jsonl')
  if os.path.exists(log):
    os.remove(log)
  bench = Bench(args.work, args.results, {'models': folder}, log=log)
  started = time.time()
  summary = {'machine': measure.machine(),
             'settings': {k: v for k, v in vars(args).items()
                          if k not in ('work', 'results')},
             'dataset': {args.models_profile: stats},
             'models': models_suite(bench, args)}
  summary['targets'] = report.model_targets(summary['models'])
  summary['duration_s'] = round(time.time() - started)
  with open(os.path.join(args.results, 'models.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  for target in summary['targets']:
    print(f'{"PASS" if target["pass"] else "FAIL"}: {target["target"]}: '
          f'{target["value"]}')
  return 0 if all(t['pass'] for t in summary['targets']) else 1


if __name__ == '__main__':
  sys.exit(main())
