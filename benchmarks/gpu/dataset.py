"""TFRecord shards of ImageNet-sized JPEGs for the GPU benchmark.

500x375 at JPEG quality 90 (about 45 KB, the issue's "ImageNet-like"
size): 512 distinct photo variants (``benchmarks.dataset``), repeated
under distinct keys to the count asked for, so that a 100,000-image
dataset takes seconds to write.
"""
import os
from typing import List

from benchmarks.dataset import IMAGENET_SIZE, photo_variants
from pipeline import demo

DISTINCT = 512
QUALITY = 90


def write_shards(folder: str, images: int, per_shard: int = 1000) -> List[str]:
  """Writes ``images`` JPEGs in shards of ``per_shard``; returns the paths.

  Shards already there (from an earlier call) are kept.
  """
  os.makedirs(folder, exist_ok=True)
  variants = [s.data for s in photo_variants(DISTINCT, IMAGENET_SIZE,
                                              quality=QUALITY)]
  paths = []
  shards = (images + per_shard - 1) // per_shard
  for shard in range(shards):
    path = os.path.join(folder, f'train-{shard:05d}-of-{shards:05d}.tfrecord')
    paths.append(path)
    if os.path.exists(path):
      continue
    first = shard * per_shard
    count = min(per_shard, images - first)
    samples = (demo.Sample(f'img-{i:07d}.jpg', variants[i % DISTINCT],
                           i % 1000) for i in range(first, first + count))
    demo.write_tfrecord_shard(path + '.partial',
                              (demo.image_example(s) for s in samples))
    os.replace(path + '.partial', path)
  return paths


def mean_jpeg_bytes() -> float:
  variants = [s.data for s in photo_variants(DISTINCT, IMAGENET_SIZE,
                                              quality=QUALITY)]
  return sum(len(v) for v in variants) / len(variants)
