"""The profiles: what a dataset's images are like, and each image's
seeded draw (``draw_plans``)."""
import dataclasses
import math
from typing import Dict, List, NamedTuple, Sequence, Tuple, Union

import numpy as np
from PIL import Image


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
