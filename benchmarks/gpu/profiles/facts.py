"""What a written dataset holds, measured from its encoded bytes
(``describe``)."""
import io
from typing import Dict, NamedTuple, Optional, Sequence

import numpy as np
from PIL import Image, JpegImagePlugin


from benchmarks.gpu.profiles.draws import ORIENTATION_TAG

# Pillow's ``subsampling`` save argument, by name.
SUBSAMPLING_NAMES = {0: '4:4:4', 1: '4:2:2', 2: '4:2:0'}


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
