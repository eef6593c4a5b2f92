"""Fuzzing the bytes (issue 11): mutated images and shards must each end as
records or error lines, never as a crash, a hang or a memory spike.

The pure decoder and readers are fuzzed directly
(tests/support/fuzz/harness.py has the invariants and the per-input time
and memory limits); one end-to-end
run checks that the pipeline keeps the same promise for mutated shards.
CI tries a fixed budget with a fixed seed; a longer campaign (100,000
inputs, about 5 minutes here):

  FEATURIZE_FUZZ_BUDGET=100000 .venv/bin/python -m pytest -q -s \\
      tests/system/test_fuzz.py -k hypothesis

(or ``--fuzz-budget 100000``; ``FEATURIZE_FUZZ_SEED`` picks another seed).
"""
import collections
import functools
import glob
import json
import os

import pytest
from hypothesis import HealthCheck, given, seed, settings

from pipeline import demo, options
from pipeline.run import run_job
from tests.support.fuzz import (corpus, dataset, harness, shard_strategies,
                                strategies)
from tests.support.fuzz.limits import DECODE_CONFIG, READ_LIMIT
from tests.support.fuzz.mutations import INTERESTING, Mutant
from transforms.decode import decode_images, imaging
from transforms.read import image_shards, tfrecord_framing
from transforms.records import ErrorRecord

# Broken inputs make Pillow warn (corrupt EXIF, odd TIFF tags): expected.
pytestmark = pytest.mark.filterwarnings('ignore::UserWarning:PIL')

DEFAULT_BUDGET = 400  # Hypothesis inputs over the three targets in CI
FUZZ_SEED = int(os.environ.get('FEATURIZE_FUZZ_SEED', '20260111'))

# Share of the budget per target: images are the largest surface.
SHARES = {'image': 0.5, 'tfrecord': 0.25, 'tar': 0.25}
STRATEGIES = {'image': strategies.image_mutants,
              'tfrecord': shard_strategies.tfrecord_mutants,
              'tar': shard_strategies.tar_mutants}


@pytest.fixture
def fuzz_budget(request) -> int:
  option = request.config.getoption('--fuzz-budget', default=None)
  if option is not None:
    return option
  return int(os.environ.get('FEATURIZE_FUZZ_BUDGET', DEFAULT_BUDGET))


def _report(target: str, before: int) -> None:
  stats = harness.STATS[target]
  outcomes = {k: v for k, v in stats.most_common() if k != 'inputs'}
  worst = harness.WORST[target]
  print(f'\nfuzz {target}: {stats["inputs"] - before} inputs tried; '
        f'outcomes {outcomes}; largest RSS growth {worst["rss_mb"]:.0f} MB; '
        f'slowest {worst["seconds"]:.2f} s: {worst["slowest"]!r}')


@pytest.mark.parametrize('target', sorted(SHARES))
def test_hypothesis_mutants_end_as_records_or_errors(target, fuzz_budget):
  examples = max(1, round(fuzz_budget * SHARES[target]))
  # Build the seeds (and import TensorFlow's Example proto) before
  # Hypothesis starts: imports inside a strategy upset its health checks.
  corpus.tfrecord_seed()
  corpus.tar_seed()

  # Reproducible: a fixed seed and no example database. The per-input time
  # limit is the harness's own; Hypothesis's deadline would flake.
  @settings(max_examples=examples, deadline=None, database=None,
            print_blob=False, report_multiple_bugs=False,
            suppress_health_check=[HealthCheck.too_slow,
                                   HealthCheck.data_too_large,
                                   HealthCheck.large_base_example])
  @seed(FUZZ_SEED)
  @given(STRATEGIES[target]())
  def fuzz(mutant):
    harness.run_one(target, mutant)

  before = harness.STATS[target]['inputs']
  fuzz()
  _report(target, before)


# Around the seeds' own sizes (96 x 64) and the usual limits.
_SWEEP_VALUES = INTERESTING + (3, 4, 9, 16, 31, 32, 64, 255, 257, 1000, 4096,
                               10000)


def test_every_size_field_lie_ends_as_a_result():
  before = harness.STATS['sweep']['inputs']
  for mutant in strategies.field_sweep(_SWEEP_VALUES):
    harness.run_one('sweep', mutant, harness.check_image)
  _report('sweep', before)


def test_huge_declared_sizes_are_refused_with_the_default_limits():
  # The pipeline's own defaults (100 MP): a header that claims more must be
  # refused from the header, never allocated.
  check = functools.partial(harness.check_image,
                            config=imaging.DecodeConfig())
  huge = [v for v in INTERESTING if v >= 0xffff]
  before = harness.STATS['default limits']['inputs']
  for mutant in strategies.field_sweep(huge):
    harness.run_one('default limits', mutant, check)
  _report('default limits', before)
  assert harness.STATS['default limits']['too_many_pixels'] > 100


def _feature_keys(out: str) -> collections.Counter:
  # TensorFlow's Example proto, as the reader uses: the TF-free tfrecord
  # package cannot share a process with TensorFlow.
  from tensorflow.core.example import example_pb2
  keys = collections.Counter()
  for path in glob.glob(os.path.join(out, 'features-*.tfrecord')):
    with open(path, 'rb') as f:
      for record in tfrecord_framing.iter_records(f, 1 << 30):
        example = example_pb2.Example.FromString(record.data)
        keys[example.features.feature['key'].bytes_list.value[0].decode()] += 1
  return keys


@pytest.mark.parametrize('relative', sorted(dataset.regressions()))
def test_regression_input_replays(relative):
  expected = dataset.regressions()[relative]
  target = relative.split('/')[0]
  with open(os.path.join(dataset.REGRESSIONS, relative), 'rb') as f:
    mutant = Mutant(relative, f.read(), ('regression',), expected['images'])
  assert harness.run_one(target, mutant) == expected['outcomes']


def test_mutated_shards_end_to_end_lose_nothing(tmp_path):
  """Every image of every mutated shard ends as exactly one feature record
  or one error line, through the real pipeline (DirectRunner)."""
  images = dataset.write(str(tmp_path / 'in'))
  out = str(tmp_path / 'out')
  job, beam_args, _ = options.parse_run_args([
      '--input', str(tmp_path / 'in' / '**'), '--output', out,
      '--weights', 'random', '--layer', 'block1_pool', '--pooling', 'avg',
      '--image-size', '32', '--batch-size', '4',
      '--max-pixels', str(DECODE_CONFIG.max_pixels),
      '--max-image-bytes', str(READ_LIMIT), '--max-error-fraction', '1',
      '--config', demo.LOCAL_CONFIG])
  with harness.backstop(300):  # a hang in a worker thread ends the run
    run_job(job, beam_args)

  # What the pure reader and decoder make of each shard is what the
  # pipeline must write: no more, no less.
  features, errors = collections.Counter(), collections.Counter()
  for path, count in images.items():
    results = list(image_shards.iter_shard(path, job.read))
    assert len(results) >= count or any(
        isinstance(r, ErrorRecord) for r in results), (
            path, [type(r).__name__ for r in results])
    for result in results:
      if not isinstance(result, ErrorRecord):
        result = decode_images.decode_record(result, job.decode)
      if isinstance(result, ErrorRecord):
        errors[(result.key, result.source, result.stage,
                result.error_type)] += 1
      else:
        features[result.key] += 1
  written = collections.Counter()
  for path in glob.glob(os.path.join(out, 'errors-*.jsonl')):
    with open(path) as f:
      for line in f:
        e = json.loads(line)
        written[(e['key'], e['source'], e['stage'], e['error_type'])] += 1
  print(f'\nend to end: {sum(images.values())} images in {len(images)} '
        f'shards: {sum(features.values())} features, errors '
        f'{collections.Counter(e[2:] for e in errors.elements())}')
  assert _feature_keys(out) == features
  assert written == errors
  assert {t[2] for t in errors} == {'read', 'decode'}  # both stages tried
  with open(os.path.join(out, 'manifest.json')) as f:
    counts = json.load(f)['counts']
  assert counts == {'images_in': sum(features.values()) + sum(
      errors.values()), 'features': sum(features.values()),
                    'errors': sum(errors.values())}
