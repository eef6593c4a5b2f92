"""Peak memory of a worker stays flat as the dataset grows.

Each run is its own process, measured with ``os.wait4`` (that child's peak
RSS only). The layer is block1_pool: 3.2 MB of features an image, so a
step that held the records (a GroupByKey, a list, a whole shard) would add
hundreds of MB between the two sizes; bounded streaming adds nothing.
"""
import os
import subprocess
import sys

import pytest

from tests import datasets

LOCAL = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                     'run_configs', 'local.yaml')


def peak_rss_mb(shard: str, out: str) -> float:
  command = [sys.executable, '-m', 'pipeline.cli', 'run', '--input', shard,
             '--output', out, '--weights', 'random', '--layer', 'block1_pool',
             '--precision', 'bfloat16', '--config', LOCAL,
             # Small batches, so that every run has full batches and the
             # peaks compare like with like.
             '--batch-size', '4']
  process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
  stderr = process.stderr.read()
  _, status, usage = os.wait4(process.pid, 0)
  assert os.waitstatus_to_exitcode(status) == 0, stderr.decode()[-3000:]
  return usage.ru_maxrss / 1024  # Linux reports KiB


@pytest.fixture(scope='module')
def peaks(tmp_path_factory):
  root = tmp_path_factory.mktemp('memory')
  runs = {'small': (20, (500, 375)), 'large': (120, (500, 375)),
          'photos_24mp': (8, (6000, 4000))}
  result = {}
  for name, (count, size) in runs.items():
    # All images in one shard: no step may hold a whole shard either.
    shard = str(root / f'{name}.tfrecord')
    datasets.write_imagenet_like_shard(shard, count, size)
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
