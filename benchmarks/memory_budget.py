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
  5% of the plan's predicted peak.
* other models at their feature layer and their own input size
  (``MODEL_RUNS``: ResNet50 at 224, InceptionV3 at 299, EfficientNetB0
  at 224), each under a budget, on the same input: the plan comes from
  each model's own graph (its parameters and activation peak). PASS as
  above. Then, for each, a budget a quarter of the smallest that works is
  refused, and the message names a smallest budget that does plan.
* ``block3_pool``, ``block4_pool`` and ``block5_pool`` alone, then
  together in one pass, at the same batch size (no budget), on the JPEGs.
  It reports each run's peak and wall time. PASS: the run of three
  layers peaks below the sum of the three single-layer runs, and within
  the single largest run's peak plus the extra outputs the plan counts.

It prints each target with PASS/FAIL and writes ``memory_budget.json``.
``--only vgg16|models|layers`` runs one part.
"""
import argparse
import io
import json
import os
import re
import sys
import tempfile
from typing import Dict, List

import numpy as np
from PIL import Image

from benchmarks import dataset, measure
from pipeline import demo, memory_plan, options
from transforms.extract import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGETS = ('1.5GiB', '3GiB', '6GiB')
LAYER_SETS = ('block1_pool', 'block3_pool,block4_pool,block5_pool')
SINGLES = ('block3_pool', 'block4_pool', 'block5_pool')
MODEL_RUNS = (('resnet50', '3GiB'), ('inceptionv3', '3GiB'),
              ('efficientnetb0', '3GiB'))
WITHIN = 0.05


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


def _plan(budget: str, *flags: str) -> memory_plan.MemoryPlan:
  parsed = options.parse_run_args([
      '--config', demo.LOCAL_CONFIG, '--input', 'x', '--output', 'y',
      '--memory-budget', budget, *flags])
  return parsed.job.memory_plan


def _planned_run(args, jpegs: str, name: str, budget: str, flags,
                 results: dict, lines: List[str]) -> None:
  """One run under ``budget`` on the JPEGs and the worst image its plan
  allows; its targets appended to ``lines``."""
  plan = _plan(budget, *flags)
  folder = os.path.join(args.work, f'in-{name}')
  os.makedirs(folder, exist_ok=True)
  for image in os.listdir(jpegs):
    target = os.path.join(folder, image)
    if not os.path.exists(target):
      os.link(os.path.join(jpegs, image), target)
  with open(os.path.join(folder, 'worst.png'), 'wb') as f:
    f.write(rgba_png(int(plan.max_pixels * 0.98)))
  out = os.path.join(args.work, f'out-{name}-{os.getpid()}')
  got = featurize(['--input', os.path.join(folder, '*'), *flags,
                   '--memory-budget', budget], out)
  peak = got.peak_rss_mb * 2**20  # measure's MB are MiB (VmHWM kB / 1024)
  predicted = plan.predicted_peak
  within_budget = peak <= plan.budget
  close = abs(peak - predicted) / predicted <= WITHIN
  results[name] = {
      'plan': plan.describe(), 'line': plan.line(),
      'peak_rss_bytes': int(peak), 'wall_s': round(got.wall_s, 1),
      'peak_over_predicted': round(peak / predicted, 3)}
  lines.append(f'{"PASS" if within_budget else "FAIL"}: {name}: peak '
               f'{peak / 2**30:.2f} GiB within the budget')
  lines.append(f'{"PASS" if close else "FAIL"}: {name}: peak '
               f'{peak / 2**30:.2f} GiB within {WITHIN:.0%} of the '
               f'predicted {predicted / 2**30:.2f} GiB '
               f'(x{peak / predicted:.2f})')
  print(lines[-2], '\n' + lines[-1], flush=True)


def _refusal(model: str) -> str:
  """A target line: a too-small budget for ``model`` is refused, naming a
  smallest budget that plans."""
  smallest = None
  try:
    _plan('64MiB', '--model', model)
  except memory_plan.BudgetError as e:
    named = re.search(r'need ([0-9.]+) GiB at least', str(e))
    smallest = f'{named.group(1)}GiB' if named else None
  if smallest is None:
    return f'FAIL: {model}: 64MiB was not refused with a smallest budget'
  try:
    _plan(smallest, '--model', model)
  except memory_plan.BudgetError as e:
    return (f'FAIL: {model}: the smallest budget named, {smallest}, is '
            f'refused too ({e})')
  return (f'PASS: {model}: 64MiB refused, naming {smallest}, which plans')


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if argv[:1] == ['--child']:
    return child(argv[1:])
  parser = argparse.ArgumentParser()
  parser.add_argument('--out', default='benchmarks/results')
  parser.add_argument('--images', type=int, default=48)
  parser.add_argument('--work', default=os.path.join(
      tempfile.gettempdir(), 'featurize-memory-budget'))
  parser.add_argument('--only', choices=('vgg16', 'models', 'layers'))
  args = parser.parse_args(argv)
  os.makedirs(args.work, exist_ok=True)
  jpegs = os.path.join(args.work, 'jpegs')
  dataset.write_image_folder(jpegs, args.images)
  results: Dict[str, dict] = {'machine': measure.machine(),
                              'images': args.images, 'budgets': {},
                              'models': {}, 'layers': {}}
  lines: List[str] = []
  if args.only in (None, 'vgg16'):
    for budget in BUDGETS:
      for layer in LAYER_SETS:
        _planned_run(args, jpegs, f'{budget} {layer}', budget,
                     ['--layer', layer], results['budgets'], lines)
  if args.only in (None, 'models'):
    for model, budget in MODEL_RUNS:
      _planned_run(args, jpegs, f'{budget} {model}', budget,
                   ['--model', model], results['models'], lines)
      lines.append(_refusal(model))
      print(lines[-1], flush=True)
  if args.only in (None, 'layers'):
    _layers(args, jpegs, results, lines)
  results['targets'] = lines
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'memory_budget.json'), 'w') as f:
    json.dump(results, f, indent=1)
  print('\n'.join(lines))
  return 0 if all(not line.startswith('FAIL') for line in lines) else 1


def _layers(args, jpegs: str, results: dict, lines: List[str]) -> None:
  """Three layers from one pass against the three single-layer runs."""
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
  extra = 16 * (models.activation_bytes(models.ModelConfig(
      layer=','.join(SINGLES))) - models.activation_bytes(models.ModelConfig(
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


if __name__ == '__main__':
  sys.exit(main())
