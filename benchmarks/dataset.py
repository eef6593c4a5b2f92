"""The benchmark's own images: real photos cut and resized to ImageNet's
typical size (500x375, ~110 KB JPEG), and 12/24-megapixel versions; and
folders of a profile's images (``write_profile_folder``), whose sizes,
encodings and formats vary image by image as users' datasets do.

Made from scikit-image's photos (no download): each image is a different
crop, mirror and scale of one of them, so no two images are the same.
"""
import json
import os
from typing import Iterator, List, Tuple

from PIL import Image

from pipeline import demo

IMAGENET_SIZE = (500, 375)
# JPEG quality that gives ImageNet's typical ~110 KB at 500x375.
IMAGENET_QUALITY = 98


def photo_variants(count: int, size: Tuple[int, int],
                   quality: int = IMAGENET_QUALITY) -> Iterator[demo.Sample]:
  """``count`` distinct JPEGs of ``size``, keys ``img-00000.jpg`` ..."""
  photos = [p.convert('RGB') for _, p in sorted(demo.real_photos().items())]
  for index in range(count):
    photo = photos[index % len(photos)]
    shift = (index // len(photos)) * 7 % 60
    box = (shift, shift // 2, photo.width - 60 + shift, photo.height - 30)
    image = photo.crop(box).resize(size, Image.Resampling.BICUBIC)
    if index % 2:
      image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    yield demo.Sample(f'img-{index:05d}.jpg',
                      demo.encode_jpeg(image, quality))


def write_image_folder(folder: str, count: int,
                       size: Tuple[int, int] = IMAGENET_SIZE) -> List[str]:
  """Writes ``count`` JPEG files; returns their paths (cached by name)."""
  os.makedirs(folder, exist_ok=True)
  paths = []
  for sample in photo_variants(count, size):
    path = os.path.join(folder, sample.key)
    if not os.path.exists(path):
      with open(path, 'wb') as f:
        f.write(sample.data)
    paths.append(path)
  return paths


def write_profile_folder(folder: str, count: int,
                         profile: str = 'imagenet', seed: int = 0) -> dict:
  """Writes ``count`` distinct images of a profile
  (``benchmarks.gpu.profiles``) as files ``img-00000.jpg`` ..., cached.

  Every file is named ``.jpg`` whatever its format, as ImageNet's PNGs
  and CMYK JPEGs are. Returns the images' statistics (``describe``).
  """
  from benchmarks.gpu import profiles
  from benchmarks.gpu.profiles.encoding import process_pool
  from benchmarks.gpu.profiles.shards import GENERATOR_VERSION
  os.makedirs(folder, exist_ok=True)
  sidecar = os.path.join(folder, '.profile.json')
  config = {'profile': profile, 'seed': seed, 'count': count,
            'generator': GENERATOR_VERSION}
  if os.path.exists(sidecar):
    with open(sidecar) as f:
      cached = json.load(f)
    if cached['config'] == config:
      return cached['stats']
  plans = profiles.draw_plans(profile, count, seed)
  with process_pool(None, count) as pool:
    encoded = profiles.encode_all(plans, pool)
  for index, data in enumerate(encoded):
    with open(os.path.join(folder, f'img-{index:05d}.jpg'), 'wb') as f:
      f.write(data)
  stats = profiles.describe(encoded)
  with open(sidecar, 'w') as f:
    json.dump({'config': config, 'stats': stats}, f, indent=1)
  return stats


def write_tfrecord_shard(path: str, count: int,
                         size: Tuple[int, int] = IMAGENET_SIZE) -> None:
  """One TFRecord shard of ``count`` JPEGs (ImageNet/TFDS style)."""
  demo.write_tfrecord_shard(
      path, (demo.image_example(s) for s in photo_variants(count, size)))


def describe_folders(folders: dict) -> dict:
  """Count and mean JPEG size of each image folder, for the results."""
  description = {}
  for name, folder in folders.items():
    sizes = [os.path.getsize(os.path.join(folder, f))
             for f in os.listdir(folder)]
    with Image.open(os.path.join(folder, sorted(os.listdir(folder))[0])) as im:
      resolution = im.size
    description[name] = {'images': len(sizes), 'resolution': resolution,
                         'mean_kb': round(sum(sizes) / len(sizes) / 1024, 1)}
  return description
