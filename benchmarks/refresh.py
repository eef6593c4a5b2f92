"""``python -m benchmarks.refresh``: what a refresh costs, with PASS/FAIL.

A dataset of ``--shards`` shards (``--images-per-shard`` ImageNet-sized
photos each) is refreshed once from scratch; then:

* a refresh that finds nothing new: its wall time is the fixed cost of
  looking (a file match, the plan); it must read no image;
* refreshes that add one new shard of ``--new`` images (two sizes): the
  marginal cost per new image, (T2 - T1) / (N2 - N1);
* ``featurize run`` over one shard of each of those two sizes, the same
  way: the marginal cost per image of a full run, to compare with.

Every command is a process of its own, timed from outside, on the
DirectRunner. Writes ``benchmarks/results/refresh/summary.json`` and
``RESULTS.md``.
"""
import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
from typing import List

from benchmarks import dataset, measure, report
from pipeline import demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURIZE = os.path.join(os.path.dirname(sys.executable), 'featurize')
NOOP_LIMIT_S = 15
MARGINAL_TOLERANCE = 0.10


def timed(args: List[str]) -> dict:
  """Wall time and output of one ``featurize`` command."""
  result = measure.run_measured([FEATURIZE, *args], cwd=ROOT)
  return {'wall_s': round(result.wall_s, 2)}


def write_shard(folder: str, name: str, photos) -> None:
  """One TFRecord shard of the given photos, keys prefixed by its name."""
  demo.write_tfrecord_shard(
      os.path.join(folder, name),
      (demo.image_example(demo.Sample(f'{name}/{s.key}', s.data))
       for s in photos))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='benchmarks.refresh')
  parser.add_argument('--shards', type=int, default=100)
  parser.add_argument('--images-per-shard', type=int, default=2)
  parser.add_argument('--new', type=int, nargs=2, default=[20, 120])
  parser.add_argument('--results', default=os.path.join(
      ROOT, 'benchmarks', 'results', 'refresh'))
  args = parser.parse_args(argv)
  job = ['--config', demo.LOCAL_CONFIG, '--weights', 'random',
         '--precision', 'bfloat16', '--batch-size', '16']
  work = tempfile.mkdtemp(prefix='featurize-refresh-bench-')
  try:
    shards = os.path.join(work, 'shards')
    os.makedirs(shards)
    # Every photo distinct: one pass over as many variants as are needed.
    photos = dataset.photo_variants(
        args.shards * args.images_per_shard + sum(args.new),
        dataset.IMAGENET_SIZE)
    for index in range(args.shards):
      write_shard(shards, f'part-{index:05d}.tfrecord',
                  itertools.islice(photos, args.images_per_shard))
    pattern = os.path.join(shards, '*.tfrecord')
    root = os.path.join(work, 'features')
    refresh = ['refresh', '--input', pattern, '--dataset', root, *job]
    summary = {'machine': measure.machine(), 'shards': args.shards,
               'images_per_shard': args.images_per_shard, 'new': args.new}
    summary['first'] = timed(refresh)
    summary['nothing_new'] = timed(refresh)
    with open(os.path.join(root, 'LATEST')) as f:
      latest = json.load(f)['version']
    summary['nothing_new']['published'] = not latest.startswith('v000001-')
    summary['new_shard'], summary['full_run'] = {}, {}
    for count in args.new:
      name = f'new-{count:05d}.tfrecord'
      write_shard(shards, name, itertools.islice(photos, count))
      summary['new_shard'][str(count)] = timed(refresh)
      alone = os.path.join(work, f'alone-{count}')
      os.makedirs(alone)
      shutil.copy(os.path.join(shards, name), alone)
      summary['full_run'][str(count)] = timed(
          ['run', '--input', os.path.join(alone, '*'), '--output',
           os.path.join(work, f'run-{count}'), *job])
    with open(os.path.join(root, 'LATEST')) as f:
      latest = json.load(f)['version']
    with open(os.path.join(root, 'versions', f'{latest}.json')) as f:
      summary['last_version_counts'] = json.load(f)['counts']
  finally:
    shutil.rmtree(work, ignore_errors=True)
  small, large = (str(n) for n in args.new)
  per_image = {
      kind: round((summary[kind][large]['wall_s']
                   - summary[kind][small]['wall_s'])
                  / (args.new[1] - args.new[0]), 4)
      for kind in ('new_shard', 'full_run')}
  summary['marginal_s_per_image'] = per_image
  ratio = per_image['new_shard'] / per_image['full_run']
  summary['targets'] = [
      {'target': f'a refresh that finds nothing new takes < {NOOP_LIMIT_S} '
                 's and publishes nothing (so reads no image)',
       'value': f'{summary["nothing_new"]["wall_s"]} s, published: '
                f'{summary["nothing_new"]["published"]}',
       'pass': (summary['nothing_new']['wall_s'] < NOOP_LIMIT_S
                and not summary['nothing_new']['published'])},
      {'target': 'marginal cost per new image within '
                 f'{MARGINAL_TOLERANCE:.0%} of a full run\'s',
       'value': f'{per_image["new_shard"] * 1000:.1f} ms vs '
                f'{per_image["full_run"] * 1000:.1f} ms ({ratio:.2f}x)',
       'pass': abs(ratio - 1) <= MARGINAL_TOLERANCE},
  ]
  lines = ['# Refresh benchmark', '',
           f'`python -m benchmarks.refresh` on {summary["machine"].get("cpu")}'
           f', {summary["machine"]["cores"]} cores; DirectRunner, bfloat16, '
           f'batch 16; {args.shards} shards of {args.images_per_shard} '
           'ImageNet-sized photos.', '',
           f'- first refresh (all {args.shards} shards): '
           f'{summary["first"]["wall_s"]} s',
           f'- refresh that finds nothing new: '
           f'{summary["nothing_new"]["wall_s"]} s']
  for count in args.new:
    lines.append(f'- refresh adding one shard of {count} images: '
                 f'{summary["new_shard"][str(count)]["wall_s"]} s; '
                 f'`featurize run` over that shard alone: '
                 f'{summary["full_run"][str(count)]["wall_s"]} s')
  lines += report.target_lines(summary['targets'])
  return report.write_results(args.results, summary,
                              '\n'.join(lines) + '\n')


if __name__ == '__main__':
  sys.exit(main())
