"""Seed files for the fuzzer: small real photos in every format we read.

Small (about 100 x 70 pixels) so that thousands of mutants decode in
minutes; real (scikit-image's photos via ``image_zoo``) so that mutations
land in natural entropy-coded data rather than in flat test patterns.
"""
import functools
import io
import tarfile
from typing import Dict, NamedTuple, Tuple

import numpy as np
from PIL import Image

from pipeline import demo
from tests.support import image_zoo
from transforms.read import tfrecord_framing

_SIZE = (96, 64)


def _small(name: str) -> Image.Image:
  return image_zoo.photo(name).resize(_SIZE, Image.Resampling.BILINEAR)


def _animated(image_format: str, **params) -> bytes:
  frames = [_small('chelsea'), _small('coffee')]
  out = io.BytesIO()
  frames[0].save(out, image_format, save_all=True, append_images=frames[1:],
                 duration=100, loop=0, **params)
  return out.getvalue()


def _rgba() -> Image.Image:
  image = _small('astronaut').convert('RGBA')
  image.putalpha(128)
  return image


@functools.lru_cache(maxsize=1)
def image_seeds() -> Dict[str, bytes]:
  """Encoded images by name; the extension names the format."""
  photo = _small('chelsea')
  exif = Image.Exif()
  exif[0x0112] = 6  # rotated: exercises exif_transpose
  return {
      'baseline.jpg': image_zoo.encode(photo, 'JPEG', quality=85),
      'progressive.jpg': image_zoo.encode(photo, 'JPEG', progressive=True),
      'exif.jpg': image_zoo.encode(photo, 'JPEG', exif=exif.tobytes()),
      'cmyk.jpg': image_zoo.encode(photo.convert('CMYK'), 'JPEG'),
      'gray.jpg': image_zoo.encode(photo.convert('L'), 'JPEG'),
      'rgb.png': image_zoo.encode(photo, 'PNG'),
      'rgba.png': image_zoo.encode(_rgba(), 'PNG'),
      'palette.png': image_zoo.encode(
          photo.convert('P', palette=Image.Palette.ADAPTIVE), 'PNG',
          transparency=0),
      'animated.png': _animated('PNG'),
      'sixteen_bit.png': image_zoo.encode(Image.fromarray(
          np.asarray(photo.convert('L'), dtype=np.uint16) * 257), 'PNG'),
      'lossy.webp': image_zoo.encode(photo, 'WEBP', quality=80),
      'lossless.webp': image_zoo.encode(_rgba(), 'WEBP', lossless=True),
      'animated.webp': _animated('WEBP'),
      'still.gif': image_zoo.encode(photo, 'GIF'),
      'animated.gif': _animated('GIF'),
      'lzw.tif': image_zoo.encode(photo, 'TIFF', compression='tiff_lzw'),
      'raw.bmp': image_zoo.encode(photo, 'BMP'),
      'binary.ppm': image_zoo.encode(photo, 'PPM'),
  }


class ShardSeed(NamedTuple):
  """A seed shard and what is in it.

  Attributes:
    data: The shard's bytes.
    images: How many images it holds.
    headers: Offsets of its framing headers (TFRecord length headers, tar
      member headers), in order.
    payloads: For a TFRecord shard, each record's payload; for a tar, each
      member's ``(name, data)``.
  """
  data: bytes
  images: int
  headers: Tuple[int, ...]
  payloads: tuple


# The images of the seed shards, one per format family.
SHARD_IMAGES = ('baseline.jpg', 'rgba.png', 'lossy.webp')


def _shard_images():
  return [image_seeds()[name] for name in SHARD_IMAGES]


@functools.lru_cache(maxsize=1)
def tfrecord_seed() -> ShardSeed:
  """Three ``tf.train.Example`` records: a JPEG, a PNG and a WebP."""
  payloads = tuple(
      demo.image_example(demo.Sample(f'img{i}', data, i))
      for i, data in enumerate(_shard_images()))
  headers, offset = [], 0
  for payload in payloads:
    headers.append(offset)
    offset += 12 + len(payload) + 4
  data = b''.join(tfrecord_framing.encode_record(p) for p in payloads)
  return ShardSeed(data, len(payloads), tuple(headers), payloads)


@functools.lru_cache(maxsize=1)
def tar_seed() -> ShardSeed:
  """A WebDataset tar of three samples (``.jpg``/``.png``/``.webp`` with
  ``.cls`` or ``.json``)."""
  members = []
  for i, (data, extension) in enumerate(zip(_shard_images(),
                                            ('jpg', 'png', 'webp'))):
    members.append((f'sample{i}.{extension}', data))
    members.append((f'sample{i}.cls', str(i).encode()) if i != 1 else
                   (f'sample{i}.json', b'{"caption": "a cat"}'))
  out = io.BytesIO()
  with tarfile.open(fileobj=out, mode='w', format=tarfile.USTAR_FORMAT) as tar:
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  headers, offset = [], 0
  for _, data in members:
    headers.append(offset)
    offset += 512 + -(-len(data) // 512) * 512
  return ShardSeed(out.getvalue(), 3, tuple(headers), tuple(members))
