"""Benchmark datasets whose images vary the way users' real datasets do.

The GPU benchmark once measured one kind of image (500x375 baseline
JPEGs). A decoder's speed depends on each image's pixels, bytes, progressive
scans, chroma subsampling, colour space and format, so a number measured on
that one kind can be far from what users see. Each profile here draws every
image's size and properties from a distribution:

* ``uniform``: those images (500x375, baseline, quality 90, 4:2:0, RGB, no
  EXIF), as a comparison row.
* ``imagenet``: ImageNet's train set as TFDS ships it: mostly its common
  shapes (500x375, 375x500, 500x333, ...), most others with a long side of
  300-500 px, about 5 % of 800-2,600 px and a thin tail of several
  megapixels; a few progressive, grayscale and CMYK JPEGs and PNGs named
  ``.jpg``.
* ``web``: a web crawl: short sides of 240-900 px, 8 % larger photos,
  mixed quality and chroma subsampling, 15 % progressive, 5 % grayscale,
  6 % with an EXIF orientation, 5 % PNG, WebP or GIF.

The shares are estimates of those datasets (written down from what is known
of them), not measurements of one. The pixels are real photos (scikit-image's,
the ones of ``pipeline.demo.real_photos``): a random box of the drawn aspect
ratio from one photo, resized to the drawn size and randomly mirrored, so
that images compress like photos. The photos are 300-1,400 px, so images
much larger than that are upscaled and compress better (fewer bytes per
pixel) than a camera's photos of the same size would.

``distinct`` images (2,048 by default) are drawn and encoded in parallel,
then repeated under distinct keys up to the count asked for, so that 100,000
images take seconds to write. Statistics of what was written (pixels, bytes,
shares of each property, measured from the encoded bytes) come back with the
shards, for the benchmark report.

This module needs only numpy, Pillow and scikit-image (for the photos), as
the GPU machine has them: no TensorFlow, Beam or ``pipeline.demo`` (whose
TFRecord writer needs ``google_crc32c``). Its ``tf.train.Example`` records
come from featurize's own encoder (``transforms.example_codec``), because
building them with the protobuf classes would import TensorFlow on the CPU
machine; TFRecord shards still need ``google_crc32c`` for their checksums
(as featurize does to read them), WebDataset shards need nothing more.

Run ``python -m benchmarks.gpu.profiles --profile imagenet --images 20000
--out /tmp/x`` to write a dataset and print its statistics as JSON.
"""
import argparse
import contextlib
import dataclasses
import functools
import io
import json
import math
import mmap
import multiprocessing
import multiprocessing.pool
import os
import sys
import tarfile
import time
from typing import (Dict, Iterable, List, NamedTuple, Optional, Sequence,
                    Tuple, Union)

import numpy as np
import PIL
from PIL import Image, JpegImagePlugin

from transforms import example_codec


# Bump when a change here changes the images or shards written for the same
# arguments: shards cached by an earlier version are then rewritten.
GENERATOR_VERSION = 1

SHARD_FORMATS = ('tfrecord', 'webdataset')
SHARD_EXTENSIONS = {'tfrecord': 'tfrecord', 'webdataset': 'tar'}

ORIENTATION_TAG = 0x0112

# ``Image.transpose`` that undoes what a viewer does for each EXIF
# orientation (``ImageOps.exif_transpose``), so that the stored pixels show
# the photo upright once the orientation is applied, as a camera's do.
_STORE_ORIENTED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}

# The photos of pipeline.demo.PHOTO_FILES, named here because importing
# pipeline.demo needs google_crc32c (a test checks the two lists agree).
PHOTO_FILES = ('astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg',
               'motorcycle_left.png', 'hubble_deep_field.jpg', 'retina.jpg',
               'camera.png')

# Pillow's ``subsampling`` save argument, by name.
SUBSAMPLING_NAMES = {0: '4:4:4', 1: '4:2:2', 2: '4:2:0'}


class Shape(NamedTuple):
  """One exact image size, with its weight among a profile's shapes."""
  width: int
  height: int
  weight: float


class SizeBand(NamedTuple):
  """Images whose size is drawn from a range.

  Attributes:
    share: Fraction of all the profile's images.
    side: Which side ``low`` and ``high`` bound: ``long`` or ``short``.
    low: Smallest length of that side, in pixels.
    high: Largest length of that side, in pixels.
    aspect_low: Smallest width / height (below 1 is portrait).
    aspect_high: Largest width / height.
  """
  share: float
  side: str
  low: int
  high: int
  aspect_low: float
  aspect_high: float


class QualityBand(NamedTuple):
  """A share of images whose JPEG (or WebP) quality lies in a range."""
  share: float
  low: int
  high: int


class Choice(NamedTuple):
  """One value of a property, with its weight."""
  value: int
  weight: float


class OtherFormat(NamedTuple):
  """A share of images stored in a format other than JPEG.

  Attributes:
    share: Fraction of all the profile's images.
    pil_format: Pillow's name of the format (``PNG``, ``WEBP``, ``GIF``).
    extension: The file extension the image is stored under; ImageNet has
      PNGs named ``.jpg``.
  """
  share: float
  pil_format: str
  extension: str


@dataclasses.dataclass(frozen=True)
class Profile:
  """How the images of one kind of dataset vary.

  Every share is a fraction of all images. Colour mode, progressive scans
  and EXIF orientation are drawn for JPEGs only, at the rate that gives
  their share of all images.

  Attributes:
    name: Names the shards and keys (no dots or slashes).
    summary: One line for reports.
    shard_format: Default shard format: ``tfrecord`` or ``webdataset``.
    shapes: Exact sizes (ImageNet's common shapes), drawn by weight.
    shapes_share: Fraction of images with one of ``shapes``.
    bands: The other images' sizes; shares sum to ``1 - shapes_share``.
    quality: JPEG (and WebP) quality, by band.
    subsampling: Pillow ``subsampling`` (0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0).
    progressive: Fraction of images that are progressive JPEGs.
    grayscale: Fraction that are grayscale JPEGs.
    cmyk: Fraction that are CMYK JPEGs.
    exif_rotated: Fraction of JPEGs with an EXIF orientation other than 1.
    orientations: The orientation (2..8) of those, by weight.
    other_formats: Images stored as PNG, WebP, GIF.
  """
  name: str
  summary: str
  shard_format: str
  shapes: Tuple[Shape, ...] = ()
  shapes_share: float = 0.0
  bands: Tuple[SizeBand, ...] = ()
  quality: Tuple[QualityBand, ...] = (QualityBand(1.0, 90, 90),)
  subsampling: Tuple[Choice, ...] = (Choice(2, 1.0),)
  progressive: float = 0.0
  grayscale: float = 0.0
  cmyk: float = 0.0
  exif_rotated: float = 0.0
  orientations: Tuple[Choice, ...] = (Choice(6, 0.6), Choice(8, 0.3),
                                      Choice(3, 0.1))
  other_formats: Tuple[OtherFormat, ...] = ()

  def __post_init__(self):
    if not self.name or any(c in self.name for c in './\\'):
      raise ValueError(f'profile name {self.name!r} must be non-empty and '
                       'have no dots or slashes (it starts every key)')
    if self.shard_format not in SHARD_FORMATS:
      raise ValueError(f'shard_format must be one of {SHARD_FORMATS}')
    sizes = self.shapes_share + sum(b.share for b in self.bands)
    if abs(sizes - 1) > 1e-6 or (self.shapes_share > 0 and not self.shapes):
      raise ValueError(f'{self.name}: shapes_share and the bands\' shares '
                       f'must sum to 1, not {sizes}')
    if any(b.side not in ('long', 'short') for b in self.bands):
      raise ValueError('a band\'s side is long or short')
    jpeg_share = 1 - sum(f.share for f in self.other_formats)
    if max(self.grayscale + self.cmyk, self.progressive,
           self.exif_rotated) > jpeg_share:
      raise ValueError(f'{self.name}: more JPEG-only shares than JPEGs')
    if any(o.value not in _STORE_ORIENTED for o in self.orientations):
      raise ValueError('EXIF orientations other than 1 are 2..8')


# ImageNet's most common shapes, weighted roughly as in its train set.
IMAGENET_SHAPES = (
    Shape(500, 375, 0.44), Shape(375, 500, 0.12), Shape(500, 333, 0.14),
    Shape(333, 500, 0.05), Shape(500, 334, 0.03), Shape(500, 400, 0.04),
    Shape(400, 500, 0.02), Shape(500, 500, 0.04), Shape(500, 335, 0.03),
    Shape(500, 281, 0.03), Shape(500, 332, 0.02), Shape(500, 374, 0.02),
    Shape(500, 353, 0.02))

PROFILES: Dict[str, Profile] = {
    'uniform': Profile(
        name='uniform',
        summary='500x375 baseline JPEGs, quality 90, 4:2:0 (the old data)',
        shard_format='tfrecord',
        shapes=(Shape(500, 375, 1.0),), shapes_share=1.0),
    'imagenet': Profile(
        name='imagenet',
        summary='ImageNet train: common shapes, a tail of large photos, '
        'a few progressive, grayscale, CMYK and PNG-as-.jpg',
        shard_format='tfrecord',
        shapes=IMAGENET_SHAPES, shapes_share=0.55,
        bands=(SizeBand(0.28, 'long', 300, 500, 1.0, 2.0),
               SizeBand(0.095, 'long', 300, 500, 0.5, 1.0),
               SizeBand(0.01, 'long', 100, 300, 0.5, 2.0),
               SizeBand(0.01, 'long', 500, 800, 0.5, 2.0),
               SizeBand(0.05, 'long', 800, 2600, 0.5, 2.0),
               SizeBand(0.005, 'long', 3000, 4500, 0.6, 1.8)),
        quality=(QualityBand(0.85, 75, 95), QualityBand(0.1, 50, 74),
                 QualityBand(0.05, 96, 100)),
        subsampling=(Choice(2, 0.85), Choice(0, 0.13), Choice(1, 0.02)),
        progressive=0.015, grayscale=0.02,
        # Above ImageNet's own (22 CMYK JPEGs and one PNG among 1.28 million,
        # as TensorFlow's build_imagenet_data.py lists them), so that 2,048
        # distinct images hold a few of each for the decoders to meet.
        cmyk=0.003, exif_rotated=0.002,
        other_formats=(OtherFormat(0.003, 'PNG', 'jpg'),)),
    'web': Profile(
        name='web',
        summary='web crawl: mixed sizes, quality and subsampling, 15 % '
        'progressive, EXIF orientations, 5 % PNG/WebP/GIF',
        shard_format='webdataset',
        bands=(SizeBand(0.90, 'short', 240, 900, 0.6, 1.8),
               SizeBand(0.02, 'short', 100, 240, 0.6, 1.8),
               SizeBand(0.08, 'long', 1200, 4000, 0.6, 1.8)),
        quality=(QualityBand(1.0, 70, 97),),
        subsampling=(Choice(2, 0.6), Choice(1, 0.1), Choice(0, 0.3)),
        progressive=0.15, grayscale=0.05, cmyk=0.002, exif_rotated=0.06,
        orientations=(Choice(6, 0.5), Choice(8, 0.25), Choice(3, 0.13),
                      Choice(2, 0.03), Choice(4, 0.03), Choice(5, 0.03),
                      Choice(7, 0.03)),
        other_formats=(OtherFormat(0.03, 'PNG', 'png'),
                       OtherFormat(0.015, 'WEBP', 'webp'),
                       OtherFormat(0.005, 'GIF', 'gif'))),
}


class ImagePlan(NamedTuple):
  """Everything drawn for one image; encoding it needs nothing else.

  Attributes:
    index: Position among the profile's distinct images.
    photo: Index into the sorted real photos.
    width: Stored width (what the header says).
    height: Stored height.
    crop: Box scale (0.6..1 of the largest box of the aspect ratio) and its
      left and top position (0..1 of the room left).
    mirror: Flip left-right.
    pil_format: ``JPEG``, ``PNG``, ``WEBP`` or ``GIF``.
    extension: File extension it is stored under.
    quality: JPEG or WebP quality.
    subsampling: Pillow's JPEG ``subsampling``.
    progressive: Progressive JPEG.
    mode: ``RGB``, ``L`` or ``CMYK``.
    orientation: EXIF orientation; 1 means no EXIF block.
  """
  index: int
  photo: int
  width: int
  height: int
  crop: Tuple[float, float, float]
  mirror: bool
  pil_format: str
  extension: str
  quality: int
  subsampling: int
  progressive: bool
  mode: str
  orientation: int


def get_profile(profile: Union[str, Profile]) -> Profile:
  """The profile named ``profile`` (or ``profile`` itself)."""
  if isinstance(profile, Profile):
    return profile
  if profile not in PROFILES:
    raise ValueError(f'unknown profile {profile!r}; '
                     f'known: {", ".join(PROFILES)}')
  return PROFILES[profile]


def _weighted_index(draw: float, weights: Sequence[float]) -> int:
  """The index that a uniform ``draw`` in [0, 1) picks, by weight."""
  cumulative = np.cumsum(weights)
  return min(len(cumulative) - 1, int(np.searchsorted(
      cumulative, draw * cumulative[-1], side='right')))


def _draw_size(profile: Profile, rng: np.random.Generator) -> Tuple[int, int]:
  # Every image makes the same draws whichever branch it takes, so that
  # image n's other properties do not depend on which branch n - 1 took.
  which, shape_pick, band_pick = rng.random(), rng.random(), rng.random()
  side_draw, aspect_draw = rng.random(), rng.random()
  if which < profile.shapes_share:
    shape = profile.shapes[_weighted_index(
        shape_pick, [s.weight for s in profile.shapes])]
    return shape.width, shape.height
  band = profile.bands[_weighted_index(
      band_pick, [b.share for b in profile.bands])]
  side = math.exp(math.log(band.low) + side_draw * math.log(
      band.high / band.low))
  aspect = math.exp(math.log(band.aspect_low) + aspect_draw * math.log(
      band.aspect_high / band.aspect_low))
  # aspect = width / height; ``side`` is the longer or the shorter one.
  if (band.side == 'long') == (aspect >= 1):
    width, height = side, side / aspect
  else:
    width, height = side * aspect, side
  return max(1, round(width)), max(1, round(height))


def draw_plans(profile: Union[str, Profile], distinct: int,
               seed: int = 0) -> List[ImagePlan]:
  """Draws the sizes and properties of ``distinct`` images.

  Args:
    profile: A profile or its name in ``PROFILES``.
    distinct: How many images to draw.
    seed: Seed of the ``numpy`` generator; the same seed gives the same
      plans, and the first ``n`` plans do not depend on ``distinct``.

  Returns:
    One ``ImagePlan`` per image, in order.
  """
  profile = get_profile(profile)
  rng = np.random.default_rng(seed)
  photos = len(PHOTO_FILES)
  other_shares = np.cumsum([f.share for f in profile.other_formats])
  # JPEG-only properties are drawn given a JPEG: scaled up by this.
  jpeg_share = 1 - (other_shares[-1] if len(other_shares) else 0)
  plans = []
  for index in range(distinct):
    width, height = _draw_size(profile, rng)
    photo = int(rng.integers(photos))
    crop = (float(rng.uniform(0.6, 1.0)), float(rng.random()),
            float(rng.random()))
    mirror = bool(rng.random() < 0.5)
    format_draw, mode_draw = rng.random(), rng.random()
    band = profile.quality[_weighted_index(
        rng.random(), [q.share for q in profile.quality])]
    quality = int(rng.integers(band.low, band.high + 1))
    subsampling = profile.subsampling[_weighted_index(
        rng.random(), [c.weight for c in profile.subsampling])].value
    progressive = bool(rng.random() < profile.progressive / jpeg_share)
    rotated = bool(rng.random() < profile.exif_rotated / jpeg_share)
    orientation = profile.orientations[_weighted_index(
        rng.random(), [c.weight for c in profile.orientations])].value
    pil_format, extension = 'JPEG', 'jpg'
    if len(other_shares) and format_draw < other_shares[-1]:
      other = profile.other_formats[int(np.searchsorted(
          other_shares, format_draw, side='right'))]
      pil_format, extension = other.pil_format, other.extension
    mode = 'RGB'
    if pil_format == 'JPEG':
      if mode_draw < profile.cmyk / jpeg_share:
        mode = 'CMYK'
      elif mode_draw < (profile.cmyk + profile.grayscale) / jpeg_share:
        mode = 'L'
    plans.append(ImagePlan(
        index=index, photo=photo, width=width, height=height, crop=crop,
        mirror=mirror, pil_format=pil_format, extension=extension,
        quality=quality, subsampling=subsampling,
        progressive=progressive and pil_format == 'JPEG', mode=mode,
        orientation=orientation if rotated and pil_format == 'JPEG' else 1))
  return plans


@functools.lru_cache(maxsize=1)
def _photos() -> Tuple[Image.Image, ...]:
  """The real photos in RGB, by name, loaded once per process."""
  import skimage.data  # pylint: disable=import-outside-toplevel
  folder = os.path.dirname(skimage.data.__file__)
  photos = []
  for name in sorted(PHOTO_FILES, key=lambda n: n.split('.')[0]):
    with Image.open(os.path.join(folder, name)) as photo:
      photos.append(photo.convert('RGB'))
  return tuple(photos)


def render(plan: ImagePlan) -> Image.Image:
  """The pixels of one planned image, before encoding."""
  photo = _photos()[plan.photo]
  # The photo as shown: for orientations 5..8 the stored image is its
  # transpose, so the shown one has the sides swapped.
  shown = ((plan.height, plan.width) if plan.orientation in (5, 6, 7, 8)
           else (plan.width, plan.height))
  aspect = shown[0] / shown[1]
  scale, left_share, top_share = plan.crop
  box_width = min(photo.width, photo.height * aspect) * scale
  box_height = box_width / aspect
  left = (photo.width - box_width) * left_share
  top = (photo.height - box_height) * top_share
  image = photo.resize(shown, Image.Resampling.BICUBIC,
                       box=(left, top, left + box_width, top + box_height))
  if plan.mirror:
    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  if plan.orientation != 1:
    image = image.transpose(_STORE_ORIENTED[plan.orientation])
  if plan.mode != 'RGB':
    image = image.convert(plan.mode)
  return image


def encode(plan: ImagePlan) -> bytes:
  """Renders and encodes one planned image."""
  image = render(plan)
  out = io.BytesIO()
  if plan.pil_format == 'JPEG':
    options = dict(quality=plan.quality, subsampling=plan.subsampling,
                   progressive=plan.progressive)
    if plan.orientation != 1:
      exif = image.getexif()
      exif[ORIENTATION_TAG] = plan.orientation
      options['exif'] = exif
    image.save(out, 'JPEG', **options)
  elif plan.pil_format == 'WEBP':
    image.save(out, 'WEBP', quality=plan.quality)
  else:
    image.save(out, plan.pil_format)
  return out.getvalue()


def _encode_indexed(plan: ImagePlan) -> Tuple[int, bytes]:
  return plan.index, encode(plan)


def _process_pool(processes: Optional[int], tasks: int):
  """A context giving a pool of ``processes`` (None: one per core, at most
  one per task), or None when this process is to do the work alone."""
  processes = min(processes or os.cpu_count() or 1, tasks)
  if processes <= 1:
    return contextlib.nullcontext()
  # spawn, not fork: the caller may have TensorFlow, JAX or Beam threads
  # running, and forking a threaded process can deadlock the child.
  return multiprocessing.get_context('spawn').Pool(processes)


def encode_all(plans: Sequence[ImagePlan],
               pool: Optional[multiprocessing.pool.Pool] = None) -> List[bytes]:
  """Encodes the planned images, in parallel when given a pool.

  Args:
    plans: From ``draw_plans``.
    pool: Worker processes; None encodes in this process. The bytes do not
      depend on it.

  Returns:
    The encoded images, in the order of ``plans``.
  """
  if pool is None:
    return [encode(plan) for plan in plans]
  position = {plan.index: n for n, plan in enumerate(plans)}
  encoded: List[Optional[bytes]] = [None] * len(plans)
  # Largest first, so that no worker is left with a 12-megapixel image
  # while the others idle.
  order = sorted(plans, key=lambda p: -p.width * p.height)
  for index, data in pool.imap_unordered(_encode_indexed, order, chunksize=4):
    encoded[position[index]] = data
  return encoded


class ImageFacts(NamedTuple):
  """What an encoded image is, read from its bytes (header only).

  Attributes:
    format: Pillow's format name, from the bytes (not the file name).
    width: Stored width.
    height: Stored height.
    mode: Pillow mode (``RGB``, ``L``, ``CMYK``, ``P``, ...).
    progressive: A progressive JPEG.
    subsampling: ``4:4:4``, ``4:2:2``, ``4:2:0`` or ``other`` for a colour
      JPEG; ``grayscale`` or ``cmyk`` for one of 1 or 4 components;
      ``not_jpeg``.
    orientation: EXIF orientation (1 when there is none).
    size: Bytes.
  """
  format: str
  width: int
  height: int
  mode: str
  progressive: bool
  subsampling: str
  orientation: int
  size: int


def image_facts(data: bytes) -> ImageFacts:
  """Reads ``ImageFacts`` from an encoded image (no pixels are decoded)."""
  with Image.open(io.BytesIO(data)) as image:
    subsampling = 'not_jpeg'
    if image.format == 'JPEG':
      layers = getattr(image, 'layers', 3)
      subsampling = {1: 'grayscale', 4: 'cmyk'}.get(layers) or (
          SUBSAMPLING_NAMES.get(JpegImagePlugin.get_sampling(image), 'other'))
    return ImageFacts(
        format=image.format, width=image.width, height=image.height,
        mode=image.mode,
        progressive=bool(image.info.get('progressive')
                         or image.info.get('progression')),
        subsampling=subsampling,
        orientation=int(image.getexif().get(ORIENTATION_TAG, 1)),
        size=len(data))


def _weighted_quantile(values: np.ndarray, weights: np.ndarray,
                       q: float) -> float:
  """The smallest value whose cumulative weight reaches ``q`` (inverted CDF)."""
  order = np.argsort(values, kind='stable')
  cumulative = np.cumsum(weights[order])
  return float(values[order][np.searchsorted(cumulative,
                                             q * cumulative[-1])])


def describe(encoded: Sequence[bytes],
             repeats: Optional[Sequence[int]] = None) -> dict:
  """Statistics of a dataset, measured from its encoded images.

  Args:
    encoded: The distinct images.
    repeats: How many times each is in the dataset (1 each when None);
      every statistic is weighted by it.

  Returns:
    A JSON-able dict: ``images``, ``distinct``, ``mean_pixels``,
    ``median_pixels``, ``p95_pixels``, ``max_pixels``, ``mean_kb`` (KiB),
    the shares of images that are progressive, grayscale, CMYK, not JPEG
    (by their bytes), EXIF-rotated and with a long side over 1,000 px,
    ``subsampling_shares`` and ``format_shares`` (dicts of shares).
  """
  facts = [image_facts(data) for data in encoded]
  weights = np.asarray([1] * len(facts) if repeats is None else repeats,
                       dtype=np.int64)
  if len(facts) == 0 or weights.sum() <= 0:
    raise ValueError('describe needs at least one image')
  total = int(weights.sum())
  pixels = np.asarray([f.width * f.height for f in facts], dtype=np.int64)

  def share(flags) -> float:
    return round(float(np.dot(np.asarray(flags, dtype=float), weights))
                 / total, 4)

  def shares(labels) -> Dict[str, float]:
    return {label: share([x == label for x in labels])
            for label in sorted(set(labels))}

  return {
      'images': total,
      'distinct': len(facts),
      'mean_pixels': round(float(np.dot(pixels, weights)) / total),
      'median_pixels': round(_weighted_quantile(pixels, weights, 0.5)),
      'p95_pixels': round(_weighted_quantile(pixels, weights, 0.95)),
      'max_pixels': int(pixels.max()),
      'mean_kb': round(float(np.dot([f.size for f in facts], weights))
                       / total / 1024, 1),
      'progressive_share': share([f.progressive for f in facts]),
      'grayscale_share': share([f.mode in ('L', 'LA') for f in facts]),
      'cmyk_share': share([f.mode == 'CMYK' for f in facts]),
      'non_jpeg_share': share([f.format != 'JPEG' for f in facts]),
      'exif_rotated_share': share([f.orientation != 1 for f in facts]),
      'subsampling_shares': shares([f.subsampling for f in facts]),
      'format_shares': shares([f.format for f in facts]),
      'long_side_over_1000_share': share(
          [max(f.width, f.height) > 1000 for f in facts]),
  }


# --------------------------------------------------------------------------
# Shards.


class _Member(NamedTuple):
  """One image in a shard: its key (with no extension), bytes, label."""
  key: str
  extension: str
  data: bytes
  label: int


class _ShardTask(NamedTuple):
  """One shard to write: images ``first`` .. ``first + count - 1``.

  Attributes:
    path: The shard's path (written as ``path.partial``, then renamed).
    shard_format: ``tfrecord`` or ``webdataset``.
    blob: File holding the distinct images one after the other.
    spans: Offset and length of each distinct image in ``blob``.
    extensions: Each distinct image's file extension.
    name: The profile's name, which starts every key.
    first: Index of the shard's first image.
    count: Images in the shard.
  """
  path: str
  shard_format: str
  blob: str
  spans: Tuple[Tuple[int, int], ...]
  extensions: Tuple[str, ...]
  name: str
  first: int
  count: int


@functools.lru_cache(maxsize=1)
def _mapped(path: str) -> mmap.mmap:
  # Mapped, not read: the workers share one copy in the page cache.
  with open(path, 'rb') as f:
    return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _write_shard(task: _ShardTask) -> None:
  blob = _mapped(task.blob)
  distinct = len(task.spans)

  def member(i: int) -> _Member:
    offset, length = task.spans[i % distinct]
    return _Member(f'{task.name}-{i:07d}', task.extensions[i % distinct],
                   blob[offset:offset + length], i % 1000)

  _SHARD_WRITERS[task.shard_format](task.path + '.partial', (
      member(i) for i in range(task.first, task.first + task.count)))
  os.replace(task.path + '.partial', task.path)


def _tfrecord_framing():
  """featurize's TFRecord framing, imported only for TFRecord shards.

  Raises:
    ImportError: when ``google_crc32c`` (its checksum) is missing, as on a
      bare GPU machine; WebDataset shards do without it.
  """
  try:
    # pylint: disable-next=import-outside-toplevel
    from transforms import tfrecord_framing
  except ImportError as e:
    raise ImportError(f'TFRecord shards need google_crc32c ({e}): install '
                      'it or write shard_format="webdataset"') from e
  return tfrecord_framing


def _write_tfrecord(path: str, members: Iterable[_Member]) -> None:
  tfrecord_framing = _tfrecord_framing()
  with open(path, 'wb') as f:
    for m in members:
      f.write(tfrecord_framing.encode_record(
          example_codec.encode_image_example(f'{m.key}.{m.extension}', m.data,
                                          m.label)))


def _write_webdataset(path: str, members: Iterable[_Member]) -> None:
  # demo.write_webdataset_shard gives every image one extension; here each
  # keeps its own (``.png``, ``.webp``). TarInfo's defaults (mtime 0, root)
  # keep the bytes the same from run to run.
  with tarfile.open(path, 'w') as tar:
    for m in members:
      for name, data in ((f'{m.key}.{m.extension}', m.data),
                         (f'{m.key}.cls', str(m.label).encode())):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


_SHARD_WRITERS = {'tfrecord': _write_tfrecord,
                  'webdataset': _write_webdataset}


class ProfileData(NamedTuple):
  """A dataset written by ``write_profile``.

  Attributes:
    paths: The shards, in order.
    pattern: Glob of exactly these shards, for featurize's ``--input``.
    shard_format: ``tfrecord`` or ``webdataset``.
    stats: ``describe``'s statistics of the images in the shards.
  """
  paths: List[str]
  pattern: str
  shard_format: str
  stats: dict


def _repeats(distinct: int, images: int) -> List[int]:
  """How often each distinct image occurs: image ``i`` is ``i % distinct``."""
  used = min(distinct, images)
  return [images // distinct + (j < images % distinct) for j in range(used)]


def write_profile(profile: Union[str, Profile], folder: str, images: int,
                  per_shard: int = 1000, distinct: int = 2048, seed: int = 0,
                  shard_format: Optional[str] = None,
                  processes: Optional[int] = None) -> ProfileData:
  """Writes ``images`` images of a profile as shards in ``folder``.

  ``distinct`` images are drawn and encoded; image ``i`` (key
  ``<profile>-<i:07d>``, label ``i % 1000``) is distinct image
  ``i % distinct``. Shards are named after every argument that changes
  their bytes, so datasets of different arguments live side by side in one
  folder. A dataset already written with the same arguments (its sidecar
  ``.json`` matches and every shard is there) is reused as it is; files are
  written as ``*.partial`` and renamed, so an interrupted run leaves no
  shard that looks complete.

  Args:
    profile: A name in ``PROFILES``, or a ``Profile``.
    folder: Where the shards go (created if missing).
    images: Images in the dataset.
    per_shard: Images per shard.
    distinct: Distinct images drawn.
    seed: Seed of the draws; the same seed gives the same bytes.
    shard_format: ``tfrecord`` (``image/encoded``, ``image/filename``,
      ``image/class/label``, as TFDS writes ImageNet) or ``webdataset``
      (``<key>.<ext>`` and ``<key>.cls`` tar members); None for the
      profile's own.
    processes: Processes that encode and write (None: ``os.cpu_count()``;
      1: this one alone). The bytes do not depend on it.

  Returns:
    The shards, their glob pattern, format and statistics.

  Raises:
    ValueError: for an unknown profile or format, or counts below 1.
    ImportError: for TFRecord shards without ``google_crc32c``.
  """
  profile = get_profile(profile)
  shard_format = shard_format or profile.shard_format
  if shard_format not in SHARD_FORMATS:
    raise ValueError(f'shard_format must be one of {SHARD_FORMATS}, '
                     f'not {shard_format!r}')
  if min(images, per_shard, distinct) < 1:
    raise ValueError('images, per_shard and distinct must be at least 1')
  if shard_format == 'tfrecord':
    _tfrecord_framing()  # Fails before the encoding, not after.
  os.makedirs(folder, exist_ok=True)
  shards = (images + per_shard - 1) // per_shard
  extension = SHARD_EXTENSIONS[shard_format]
  stem = f'{profile.name}-s{seed}-d{distinct}-n{images}'
  paths = [os.path.join(folder, f'{stem}-{n:05d}-of-{shards:05d}.{extension}')
           for n in range(shards)]
  pattern = os.path.join(folder, f'{stem}-*-of-{shards:05d}.{extension}')
  sidecar = os.path.join(folder, f'{stem}-of-{shards:05d}.{extension}.json')
  # Everything else that changes the bytes: a changed profile or encoder
  # must not be mistaken for the cached one.
  config = json.loads(json.dumps({
      'generator_version': GENERATOR_VERSION,
      'profile': dataclasses.asdict(profile), 'seed': seed,
      'distinct': distinct, 'images': images, 'per_shard': per_shard,
      'shard_format': shard_format, 'pillow': PIL.__version__,
      'numpy': np.__version__}))
  cached = _read_sidecar(sidecar)
  if (cached is not None and cached.get('config') == config
      and all(os.path.exists(p) for p in paths)):
    return ProfileData(paths, pattern, shard_format, cached['stats'])

  repeats = _repeats(distinct, images)
  plans = draw_plans(profile, distinct, seed)[:len(repeats)]
  # The shards are written in parallel too (100,000 web images are 10 GB):
  # the workers take the distinct images from one file that they map.
  blob = os.path.join(folder, f'.{stem}.distinct.partial')
  with _process_pool(processes, max(len(plans), shards)) as pool:
    encoded = encode_all(plans, pool)
    with open(blob, 'wb') as f:
      f.write(b''.join(encoded))
    try:
      spans, offset = [], 0
      for data in encoded:
        spans.append((offset, len(data)))
        offset += len(data)
      tasks = [_ShardTask(path, shard_format, blob, tuple(spans),
                          tuple(p.extension for p in plans), profile.name,
                          n * per_shard, min(per_shard, images - n * per_shard))
               for n, path in enumerate(paths)]
      if pool is None:
        for task in tasks:
          _write_shard(task)
      else:
        pool.map(_write_shard, tasks, chunksize=1)
    finally:
      _mapped.cache_clear()
      os.remove(blob)
  stats = describe(encoded, repeats)
  with open(sidecar + '.partial', 'w') as f:
    json.dump({'config': config, 'stats': stats}, f, indent=1)
  os.replace(sidecar + '.partial', sidecar)
  return ProfileData(paths, pattern, shard_format, stats)


def _read_sidecar(path: str) -> Optional[dict]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def main(argv: Optional[Sequence[str]] = None) -> dict:
  """The command line: writes one profile's dataset, prints its stats."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--profile', choices=sorted(PROFILES), required=True)
  parser.add_argument('--images', type=int, required=True)
  parser.add_argument('--out', required=True, help='Folder for the shards.')
  parser.add_argument('--distinct', type=int, default=2048)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--per-shard', type=int, default=1000)
  parser.add_argument('--format', choices=SHARD_FORMATS, default=None,
                      help='Shard format (default: the profile\'s own).')
  parser.add_argument('--processes', type=int, default=None)
  args = parser.parse_args(argv)
  start = time.monotonic()
  data = write_profile(args.profile, args.out, args.images,
                       per_shard=args.per_shard, distinct=args.distinct,
                       seed=args.seed, shard_format=args.format,
                       processes=args.processes)
  report = {'profile': args.profile, 'shard_format': data.shard_format,
            'pattern': data.pattern, 'shards': len(data.paths),
            'seconds': round(time.monotonic() - start, 1),
            'stats': data.stats}
  json.dump(report, sys.stdout, indent=2)
  print()
  return report


if __name__ == '__main__':
  main()
