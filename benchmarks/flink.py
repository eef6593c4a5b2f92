"""``python -m benchmarks.flink``: featurize on a local Flink cluster against
the DirectRunner, at two dataset sizes, with PASS/FAIL per target.

Starts its own cluster (``featurize flink-local``: two TaskManagers with two
slots, a worker pool each) in a temporary folder, on the ports of
``run_configs/flink.yaml``, and stops it at the end. For each size it runs
the same job on the DirectRunner (``run_configs/local.yaml``) and on Flink,
and records:

* wall time of each ``featurize run`` process, and its steady throughput:
  images over the time from the first record on disk to ``_SUCCESS``
  (Flink's fixed costs, job submission above all, vary by seconds from run
  to run, too much for a marginal figure between two sizes);
* peak RSS of the DirectRunner's process, and of each TaskManager (a JVM)
  and of each worker pool's process
  tree (the pool and its SDK workers, summed at each sample), and the
  largest single process of each tree (the worker holding VGG16).

Writes ``benchmarks/results/flink/summary.json`` and ``RESULTS.md``.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Dict, List

from benchmarks import dataset, measure, report
from pipeline import demo
from pipeline.runners.flink_local import (cluster, distribution, job_server,
                                          processes, services)
from pipeline.runners.flink_local.settings import ClusterSettings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLINK_CONFIG = os.path.join(ROOT, 'run_configs', 'flink.yaml')
FEATURIZE = os.path.join(os.path.dirname(sys.executable), 'featurize')
IMAGES_PER_SHARD = 25


def write_inputs(folder: str, count: int) -> str:
  """``count`` ImageNet-sized photos in TFRecord shards of 25."""
  os.makedirs(folder, exist_ok=True)
  shards = (count + IMAGES_PER_SHARD - 1) // IMAGES_PER_SHARD
  for index in range(shards):
    n = min(IMAGES_PER_SHARD, count - index * IMAGES_PER_SHARD)
    dataset.write_tfrecord_shard(
        os.path.join(folder, f'part-{index:05d}.tfrecord'), n)
  return os.path.join(folder, '*.tfrecord')


def run_featurize(config: str, pattern: str, out: str, job_args: List[str],
                  roots: Dict[str, int]) -> dict:
  """One timed ``featurize run``, sampling the memory of ``roots`` (the
  cluster's processes) and of the launcher's own process tree."""
  command = [FEATURIZE, 'run', '--config', config, '--input', pattern,
             '--output', out, *job_args]
  with measure.TreePeaks(roots) as peaks:
    result = measure.run_measured(
        command, cwd=ROOT,
        first_output_glob=os.path.join(out, '.temp-featurize-*',
                                       'features-*'),
        done_glob=os.path.join(out, '_SUCCESS'))
  with open(os.path.join(out, 'manifest.json')) as f:
    counts = json.load(f)['counts']
  return {'wall_s': round(result.wall_s, 1),
          'first_output_s': round(result.first_output_s, 1),
          'done_s': round(result.done_s, 1), 'counts': counts,
          'launcher_peak_mb': round(result.peak_rss_mb, 1),
          'peaks': peaks.peaks_mb()}


def steady_images_per_s(run: dict) -> float:
  """Images over the time from the first record on disk to ``_SUCCESS``:
  the work itself, without start-up, submission and model loading."""
  return round(run['counts']['images_in'] / (run['done_s']
                                              - run['first_output_s']), 1)


# Two jobs, each at both sizes. "speed" is the real thing (the whole conv
# base). "memory" makes retention visible: block1_pool gives 3.2 MB of
# features an image, so a step that held the records of the extra images
# would add ~1 GB between the sizes, far above the noise of batches in
# flight (batches of 4 keep that noise small).
JOBS = {
    'speed': ['--layer', 'block5_pool', '--batch-size', '16'],
    'memory': ['--layer', 'block1_pool', '--batch-size', '4'],
}
FEATURE_MB = {'speed': 0.1, 'memory': 3.2}  # one image's features
MIN_SPEED_RATIO = 0.7


def targets(summary: dict, taskmanager_mb: float) -> List[dict]:
  """The worker's memory is flat in the dataset size, each TaskManager
  stays inside its process size, and Flink keeps up with the DirectRunner."""
  small, large = summary['sizes']
  memory = summary['runs']['memory']
  rows = []
  for name in sorted(memory[str(large)]['flink']['peaks']):
    if not name.startswith('pool-'):
      continue
    before = memory[str(small)]['flink']['peaks'][name]['largest_process_mb']
    after = memory[str(large)]['flink']['peaks'][name]['largest_process_mb']
    held = (large - small) * FEATURE_MB['memory']
    rows.append({
        'target': f'{name}: the SDK worker\'s peak RSS grows by less than '
                  f'10 % from {small} to {large} images (holding the extra '
                  f'images\' features would add ~{held:.0f} MB)',
        'value': f'{before:.0f} -> {after:.0f} MB',
        'pass': after - before < 0.10 * before})
  for job, runs in summary['runs'].items():
    peak = max(run['flink']['peaks'][name]['tree_mb']
               for run in runs.values() for name in run['flink']['peaks']
               if name.startswith('tm-'))
    rows.append({
        'target': f'{job}: every TaskManager JVM within its process size '
                  f'({taskmanager_mb:.0f} MB)',
        'value': f'largest peak {peak:.0f} MB',
        'pass': peak <= taskmanager_mb})
  m = summary['steady_images_per_s']
  rows.append({
      'target': f'speed: Flink\'s steady throughput at {large} images >= '
                f'{MIN_SPEED_RATIO} x the DirectRunner\'s (2 workers and 4 '
                'JVMs share the cores)',
      'value': f'{m["flink"]} vs {m["direct"]} images/s '
               f'({m["flink"] / m["direct"]:.2f}x)',
      'pass': m['flink'] >= MIN_SPEED_RATIO * m['direct']})
  return rows


def markdown(summary: dict) -> str:
  lines = ['# featurize on Flink vs the DirectRunner', '',
           f'`python -m benchmarks.flink` on {summary["machine"].get("cpu")}, '
           f'{summary["machine"]["cores"]} cores. Cluster: 2 TaskManagers x '
           '2 slots, one worker pool each, sdk_worker_parallelism 1. Every '
           f'job: `{" ".join(summary["job_args"])}` plus its own flags.', '',
           '| job | images | DirectRunner s (images/s) | Flink s (images/s) |'
           ' DirectRunner peak MB | TaskManager peak MB |'
           ' worker-pool tree peak MB | SDK worker peak MB |',
           '|---|---|---|---|---|---|---|---|']
  for job, runs in summary['runs'].items():
    for n in summary['sizes']:
      run = runs[str(n)]
      p = run['flink']['peaks']
      lines.append(
          f'| {job} (`{" ".join(JOBS[job])}`) | {n} | '
          f'{run["direct"]["wall_s"]} ({steady_images_per_s(run["direct"])}) '
          f'| {run["flink"]["wall_s"]} ({steady_images_per_s(run["flink"])}) '
          f'| {run["direct"]["launcher_peak_mb"]:.0f} | '
          f'{p["tm-1"]["tree_mb"]:.0f} / {p["tm-2"]["tree_mb"]:.0f} | '
          f'{p["pool-1"]["tree_mb"]:.0f} / {p["pool-2"]["tree_mb"]:.0f} | '
          f'{p["pool-1"]["largest_process_mb"]:.0f} / '
          f'{p["pool-2"]["largest_process_mb"]:.0f} |')
  lines += ['', 'Seconds are the whole `featurize run` process; images/s '
            'counts from the first record on disk to `_SUCCESS` (the work, '
            'without start-up, job submission and model loading). Peaks: '
            'the DirectRunner\'s one process; each TaskManager (a JVM); each '
            'worker pool\'s tree (the pool and its SDK workers, summed); '
            'its largest process (the SDK worker holding VGG16).',
            *report.target_lines(summary['targets'])]
  return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='benchmarks.flink')
  parser.add_argument('--sizes', type=int, nargs=2, default=[100, 800])
  parser.add_argument('--precision', default='bfloat16')
  parser.add_argument('--results',
                      default=os.path.join(ROOT, 'benchmarks', 'results',
                                           'flink'))
  args = parser.parse_args(argv)
  job_args = ['--weights', 'random', '--precision', args.precision]
  work = tempfile.mkdtemp(prefix='featurize-flink-bench-')
  settings = ClusterSettings(cluster_dir=os.path.join(work, 'cluster'))
  distribution.prepare(settings)
  job_server.prepare(settings)
  summary = {'machine': measure.machine(), 'sizes': args.sizes,
             'job_args': job_args, 'runs': {}}
  try:
    cluster.start(settings, sys.executable)
    roots = {name: processes.read_record(settings.cluster_dir, name).pid
             for name in services.service_names(settings)
             if name.startswith(('tm-', 'pool-'))}
    patterns = {n: write_inputs(os.path.join(work, f'in-{n}'), n)
                for n in args.sizes}
    for job, flags in JOBS.items():
      summary['runs'][job] = {}
      for n in args.sizes:
        outs = {r: os.path.join(work, f'{r}-{job}-{n}')
                for r in ('direct', 'flink')}
        direct = run_featurize(demo.LOCAL_CONFIG, patterns[n], outs['direct'],
                               job_args + flags, {})
        flink = run_featurize(FLINK_CONFIG, patterns[n], outs['flink'],
                              job_args + flags, roots)
        for out in outs.values():  # block1_pool writes 3.2 MB an image
          shutil.rmtree(out, ignore_errors=True)
        summary['runs'][job][str(n)] = {'direct': direct, 'flink': flink}
        print(f'{job}, {n} images: DirectRunner {direct["wall_s"]} s, Flink '
              f'{flink["wall_s"]} s, peaks {json.dumps(flink["peaks"])}',
              flush=True)
  finally:
    cluster.stop(settings)
    shutil.rmtree(work, ignore_errors=True)
  speed = summary['runs']['speed'][str(args.sizes[1])]
  summary['steady_images_per_s'] = {
      runner: steady_images_per_s(speed[runner]) for runner in speed}
  summary['targets'] = targets(
      summary, float(settings.taskmanager_memory.rstrip('m')))
  return report.write_results(args.results, summary, markdown(summary))


if __name__ == '__main__':
  sys.exit(main())
