"""Peak memory of a worker stays flat as the dataset grows.

Each run is its own process, which reports its own peak RSS
(``tests/support/peak_rss.py``). The layer is block1_pool: 3.2 MB of
features an image, so a step that held the records (a GroupByKey, a list,
a whole shard) would add hundreds of MB between the two sizes; bounded
streaming adds nothing.
"""
import subprocess
import sys

import pytest

from benchmarks import dataset as bench_dataset
from pipeline import demo
from tests.support.paths import ROOT

LOCAL = demo.LOCAL_CONFIG


def peak_rss_mb(shard: str, out: str) -> float:
  command = [sys.executable, '-m', 'tests.support.peak_rss', 'run',
             '--input', shard, '--output', out, '--weights', 'random',
             '--layer', 'block1_pool', '--precision', 'bfloat16',
             '--config', LOCAL,
             # Small batches, so that every run has full batches and the
             # peaks compare like with like.
             '--batch-size', '4']
  result = subprocess.run(command, capture_output=True, text=True,
                          cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  last = result.stdout.strip().splitlines()[-1]
  assert last.startswith('PEAK_RSS_KB ')
  return int(last.split()[1]) / 1024


@pytest.fixture(scope='module')
def peaks(tmp_path_factory):
  root = tmp_path_factory.mktemp('memory')
  runs = {'small': (20, (500, 375)), 'large': (120, (500, 375)),
          'photos_24mp': (8, (6000, 4000))}
  result = {}
  for name, (count, size) in runs.items():
    # All images in one shard: no step may hold a whole shard either.
    shard = str(root / f'{name}.tfrecord')
    bench_dataset.write_tfrecord_shard(shard, count, size)
    result[name] = peak_rss_mb(shard, str(root / f'out-{name}'))
  print('peak RSS MB:', result)
  return result


def test_peak_memory_does_not_grow_with_the_number_of_images(peaks):
  # 100 more images = 320 MB more features; allow 5% of the base.
  assert peaks['large'] - peaks['small'] < 0.05 * peaks['small'], peaks


def test_large_photos_cost_no_more_than_small_ones(peaks):
  # A 24-megapixel RGB image is 72 MB decoded; DCT-scaled decoding keeps
  # it near ImageNet size.
  assert peaks['photos_24mp'] - peaks['small'] < 100, peaks
