"""A small input folder of mutated shards for one end-to-end run.

Seeds and fixed mutations of them (the kinds the fuzzer tries), plus every
committed regression input, in the three input formats.
"""
import json
import os
from typing import Dict

from pipeline import demo
from tests.support.fuzz import corpus, fields
from tests.support.fuzz import mutations as m
from tests.support.paths import TESTS
from transforms.read import tfrecord_framing

REGRESSIONS = os.path.join(TESTS, 'fuzz_regressions')


# Regression target -> input folder of the end-to-end run.
_FOLDERS = {'image': 'files', 'tar': 'webdataset', 'tfrecord': 'tfrecord'}


def regressions() -> Dict[str, dict]:
  """``expected.json``: regression file (relative path) -> expectations."""
  with open(os.path.join(REGRESSIONS, 'expected.json')) as f:
    return json.load(f)


def _tfrecord(prefix: str, images) -> bytes:
  return b''.join(tfrecord_framing.encode_record(demo.image_example(
      demo.Sample(f'{prefix}/img{i}', data, i))) for i, data in
                  enumerate(images))


def _tfrecord_shards() -> Dict[str, bytes]:
  seeds = corpus.image_seeds()
  images = [seeds[name] for name in corpus.SHARD_IMAGES]
  jpeg = images[0]
  height = next(f for f in fields.jpeg_fields(jpeg) if f.name == 'height')
  shards = {name: _tfrecord(name, images) for name in
            ('seed', 'huge-length', 'flipped-payload')}
  shards['bad-image'] = _tfrecord(
      'bad-image', [fields.write_field(jpeg, height, 0)] + images[1:])
  # Record 1 declares 2^62 bytes, with a length CRC that vouches for it.
  second = 16 + len(demo.image_example(demo.Sample('huge-length/img0',
                                                   jpeg, 0)))
  shards['huge-length'] = m.tfrecord_length(shards['huge-length'], second,
                                            1 << 62, fix_crc=True)
  data = shards['flipped-payload']
  shards['flipped-payload'] = m.flip_bits(data, (8 * (len(data) - 100),))
  return shards


def write(root: str) -> Dict[str, int]:
  """Writes the shards under ``root``; returns path -> images put in."""
  seeds = corpus.image_seeds()
  files = {f'tfrecord/{name}.tfrecord': (data, 3)
           for name, data in _tfrecord_shards().items()}
  files['webdataset/seed.tar'] = (corpus.tar_seed().data, 3)
  files['files/baseline.jpg'] = (seeds['baseline.jpg'], 1)
  files['files/cut.webp'] = (seeds['lossy.webp'][:700], 1)
  for relative, expected in regressions().items():
    target, name = relative.split('/')
    with open(os.path.join(REGRESSIONS, relative), 'rb') as f:
      files[f'{_FOLDERS[target]}/{name}'] = (f.read(), expected['images'])
  images = {}
  for relative, (data, count) in files.items():
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(data)
    images[path] = count
  return images
