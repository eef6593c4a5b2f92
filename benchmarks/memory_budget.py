"""``--memory-budget`` measured: each planned run's peak RSS against its
budget and against the plan's prediction, and several layers from one
pass against the single-layer runs.

``python -m benchmarks.memory_budget [--out DIR] [--images N]`` runs, each
in a process of its own through ``measure.run_measured`` (the peak of its
process tree, from VmHWM):

* budgets of 1.5, 3 and 6 GiB, each with ``block1_pool`` and with
  ``block3_pool,block4_pool,block5_pool``. The input is ``--images``
  ImageNet-sized JPEGs and one RGBA PNG just under the plan's
  ``--max-pixels``: the worst image the plan allows, which its decode
  buffer is sized for. PASS: the peak is within the budget, and within
  15% of the plan's predicted peak.
* ``block3_pool``, ``block4_pool`` and ``block5_pool`` alone, then
  together in one pass, at the same batch size (no budget), on the JPEGs.
  It reports each run's peak and wall time. PASS: the run of three
  layers peaks below the sum of the three single-layer runs, and within
  the single largest run's peak plus the extra outputs the plan counts.

It prints each target with PASS/FAIL and writes ``memory_budget.json``.
"""
import argparse
import io
import json
import os
import sys
import tempfile
from typing import Dict, List

import numpy as np
from PIL import Image

from benchmarks import dataset, measure
from pipeline import demo, memory_plan, options
from transforms.extract import vgg16

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGETS = ('1.5GiB', '3GiB', '6GiB')
LAYER_SETS = ('block1_pool', 'block3_pool,block4_pool,block5_pool')
SINGLES = ('block3_pool', 'block4_pool', 'block5_pool')
WITHIN = 0.15


def rgba_png(pixels: int) -> bytes:
  """An RGBA PNG of about ``pixels`` (a smooth gradient with alpha: it
  compresses well, decodes like any RGBA PNG)."""
  width = int(np.sqrt(pixels * 4 / 3))
  height = pixels // width
  small = np.random.default_rng(0).integers(0, 255, (8, 8, 4), np.uint8)
  image = Image.fromarray(small, 'RGBA').resize((width, height),
                                                 Image.Resampling.BILINEAR)
  out = io.BytesIO()
  image.save(out, 'PNG', compress_level=1)
  return out.getvalue()


def featurize(args: List[str], out: str) -> measure.Measurement:
  """One ``featurize run`` in a process of its own (``child``), measured."""
  command = measure.python_command(
      'benchmarks.memory_budget', '--child', 'run', '--config',
      demo.LOCAL_CONFIG, '--output', out, '--weights', 'random', '--quiet',
      '--max-error-fraction', '1', *args)
  return measure.run_measured(command, cwd=ROOT, timeout_s=1800)


def child(argv: List[str]) -> int:
  """Runs featurize in this process; its status as the last JSON line
  (what ``measure.run_measured`` reads)."""
  # pylint: disable=import-outside-toplevel
  from pipeline import cli
  from tests.support.peak_rss import peak_rss_kb
  status = cli.main(argv)
  print(json.dumps({'status': status, 'peak_rss_kb': peak_rss_kb()}),
        flush=True)
  return status


def _plan(budget: str, layer: str) -> memory_plan.MemoryPlan:
  parsed = options.parse_run_args([
      '--config', demo.LOCAL_CONFIG, '--input', 'x', '--output', 'y',
      '--layer', layer, '--memory-budget', budget])
  return parsed.job.memory_plan


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if argv[:1] == ['--child']:
    return child(argv[1:])
  parser = argparse.ArgumentParser()
  parser.add_argument('--out', default='benchmarks/results')
  parser.add_argument('--images', type=int, default=48)
  parser.add_argument('--work', default=os.path.join(
      tempfile.gettempdir(), 'featurize-memory-budget'))
  args = parser.parse_args(argv)
  os.makedirs(args.work, exist_ok=True)
  jpegs = os.path.join(args.work, 'jpegs')
  dataset.write_image_folder(jpegs, args.images)
  results: Dict[str, dict] = {'machine': measure.machine(),
                              'images': args.images, 'budgets': {},
                              'layers': {}}
  lines = []
  for budget in BUDGETS:
    for layer in LAYER_SETS:
      plan = _plan(budget, layer)
      folder = os.path.join(args.work, f'in-{budget}-{len(layer)}')
      os.makedirs(folder, exist_ok=True)
      for name in os.listdir(jpegs):
        target = os.path.join(folder, name)
        if not os.path.exists(target):
          os.link(os.path.join(jpegs, name), target)
      with open(os.path.join(folder, 'worst.png'), 'wb') as f:
        f.write(rgba_png(int(plan.max_pixels * 0.98)))
      out = os.path.join(args.work, f'out-{budget}-{len(layer)}')
      got = featurize(['--input', os.path.join(folder, '*'), '--layer',
                       layer, '--memory-budget', budget],
                      out + f'-{os.getpid()}')
      peak = got.peak_rss_mb * 2**20  # measure's MB are MiB (VmHWM kB / 1024)
      predicted = plan.predicted_peak
      within_budget = peak <= plan.budget
      close = abs(peak - predicted) / predicted <= WITHIN
      results['budgets'][f'{budget} {layer}'] = {
          'plan': plan.describe(), 'line': plan.line(),
          'peak_rss_bytes': int(peak), 'wall_s': round(got.wall_s, 1),
          'peak_over_predicted': round(peak / predicted, 3)}
      lines.append(f'{"PASS" if within_budget else "FAIL"}: {budget} '
                   f'{layer}: peak {peak / 2**30:.2f} GiB within the budget')
      lines.append(f'{"PASS" if close else "FAIL"}: {budget} {layer}: peak '
                   f'{peak / 2**30:.2f} GiB within {WITHIN:.0%} of the '
                   f'predicted {predicted / 2**30:.2f} GiB '
                   f'(x{peak / predicted:.2f})')
      print(lines[-2], '\n' + lines[-1], flush=True)
  batch = ['--batch-size', '16', '--input', os.path.join(jpegs, '*')]
  for layer in SINGLES + (','.join(SINGLES),):
    got = featurize(batch + ['--layer', layer],
                    os.path.join(args.work, f'layers-{layer.replace(",", "+")}-'
                                 f'{os.getpid()}'))
    results['layers'][layer] = {'peak_rss_mib': round(got.peak_rss_mb, 1),
                                'wall_s': round(got.wall_s, 1)}
  together = results['layers'][','.join(SINGLES)]
  singles = [results['layers'][layer] for layer in SINGLES]
  # The outputs the one pass keeps beside the later layers, a batch of 16.
  extra = 16 * (vgg16.activation_bytes(vgg16.ModelConfig(
      layer=','.join(SINGLES))) - vgg16.activation_bytes(vgg16.ModelConfig(
          layer=SINGLES[-1]))) / 2**20
  largest = max(s['peak_rss_mib'] for s in singles)
  below_sum = together['peak_rss_mib'] < sum(s['peak_rss_mib'] for s in singles)
  bounded = together["peak_rss_mib"] <= largest + extra * 1.3
  lines.append(f'{"PASS" if below_sum else "FAIL"}: three layers in one '
               f'pass peak {together["peak_rss_mib"]:.0f} MiB, below the three '
               f'single-layer runs together '
               f'({sum(s["peak_rss_mib"] for s in singles):.0f} MiB)')
  lines.append(f'{"PASS" if bounded else "FAIL"}: three layers in one pass '
               f'peak within the largest single run ({largest:.0f} MiB) plus '
               f'the extra outputs ({extra:.0f} MiB a batch of 16, x1.3)')
  lines.append(f'(reported) three layers in one pass: '
               f'{together["wall_s"]:.1f} s against '
               f'{sum(s["wall_s"] for s in singles):.1f} s for the three '
               f'runs')
  results['targets'] = lines
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'memory_budget.json'), 'w') as f:
    json.dump(results, f, indent=1)
  print('\n'.join(lines))
  return 0 if all(not line.startswith('FAIL') for line in lines) else 1


if __name__ == '__main__':
  sys.exit(main())
