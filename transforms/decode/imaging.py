"""Pure image decoding: bytes in, a bounded-size RGB ``uint8`` array out.

Tested without Beam. One rule turns every image into 8-bit RGB:

* The format comes from the magic bytes, never from the file name.
* The pixel limit is checked from the header, before any pixel is decoded,
  so a decompression bomb never allocates.
* JPEGs larger than needed are decoded at reduced size with DCT scaling
  (Pillow ``draft``), which is both faster and smaller in memory.
* Animated images use frame 0. EXIF orientation is applied.
* Alpha (RGBA, LA, PA, palette transparency) is composited onto white.
* Palette, grayscale, bilevel and CMYK images convert to RGB; 16- and
  32-bit integer images scale linearly from 0..65535 to 0..255 (clipped);
  float images are clipped to 0..255.
* Plain PNGs (8-bit grey, RGB or RGBA, no transparency chunk, palette,
  animation, EXIF or XMP) are decoded by libspng (``pyspng``) instead of
  Pillow: their decoding takes about half the time, the whole of decode
  and resize about 0.75, and the pixels are the same, since PNG is
  lossless. Any other PNG, and any that libspng refuses, is Pillow's, so
  errors stay Pillow's.
* Resize ``center-crop`` (default): shorter side to ``resize_shorter``
  (256), central ``image_size`` square (224); ``squash``: the whole image
  to ``image_size`` square. Bilinear, antialiased when shrinking. The crop
  is applied as a source box of the resize, so even a 1x5000 image never
  makes a large intermediate.
"""
import dataclasses
import io
import struct
from typing import Optional, Tuple

import numpy as np
from PIL import Image
from PIL import ImageOps

# Peak memory of decoding one image, per pixel, over what the process held
# before: 3.0 for an RGB PNG, 4.3 for a grayscale one and 18.8 for an RGBA
# PNG, which is composited onto white (6000x4000, ``decode_image``,
# measured on this project's 2-core AMD). JPEGs decode reduced in the DCT
# and cost far less. The worst case is what a memory budget must hold.
DECODE_BYTES_PER_PIXEL = 19
RESIZE_POLICIES = ('center-crop', 'squash')

# Pillow's own bomb check would raise its own error (or only warn); we do
# the check ourselves with our limit and our message.
Image.MAX_IMAGE_PIXELS = None

_MAGIC = (
    (b'\xff\xd8\xff', 'JPEG'),
    (b'\x89PNG\r\n\x1a\n', 'PNG'),
    (b'GIF87a', 'GIF'),
    (b'GIF89a', 'GIF'),
    (b'BM', 'BMP'),
    (b'II*\x00', 'TIFF'),
    (b'MM\x00*', 'TIFF'),
)


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  """How images are decoded and resized.

  Attributes:
    image_size: Side of the square model input, in pixels.
    resize: ``center-crop`` or ``squash``.
    resize_shorter: For ``center-crop``: shorter side before cropping.
    max_pixels: Largest width x height accepted, checked from the header.
  """
  image_size: int = 224
  resize: str = 'center-crop'
  resize_shorter: int = 256
  max_pixels: int = 100_000_000

  def __post_init__(self):
    if self.resize not in RESIZE_POLICIES:
      raise ValueError(f'resize must be one of {RESIZE_POLICIES}, '
                       f'not {self.resize!r}')
    if self.image_size < 32 or self.resize_shorter < self.image_size:
      raise ValueError('need 32 <= image_size <= resize_shorter')


class ImageError(Exception):
  """An image that cannot be used, with a short machine-readable type."""

  def __init__(self, error_type: str, message: str):
    super().__init__(message)
    self.error_type = error_type


def sniff_format(data: bytes) -> str:
  """Returns the Pillow format name of ``data`` from its magic bytes.

  Raises:
    ImageError: for empty data or an unrecognised signature.
  """
  if not data:
    raise ImageError('empty', 'zero-byte image')
  for magic, name in _MAGIC:
    if data.startswith(magic):
      return name
  if data[:4] == b'RIFF' and data[8:12] == b'WEBP':
    return 'WEBP'
  if data[:2] in (b'P1', b'P2', b'P3', b'P4', b'P5', b'P6'):
    return 'PPM'
  raise ImageError('unknown_format',
                   f'not a recognised image format (starts with {data[:8]!r})')


def shorter_side(image_size: int) -> int:
  """The shorter side ``center-crop`` resizes to before cropping
  ``image_size``: 256 for 224, in the same ratio for other sizes (342
  for Inception's 299), as ImageNet's evaluation crops."""
  return round(image_size * 256 / 224)


def crop_box(width: int, height: int,
             config: DecodeConfig) -> Tuple[float, float, float, float]:
  """The source region that the resize policy keeps, as a Pillow box."""
  if config.resize == 'squash':
    return (0.0, 0.0, float(width), float(height))
  # Centre-crop after scaling the shorter side to resize_shorter keeps a
  # square of side min(w, h) * image_size / resize_shorter in the source.
  side = min(width, height) * config.image_size / config.resize_shorter
  left = (width - side) / 2
  top = (height - side) / 2
  return (left, top, left + side, top + side)


def _draft_size(width: int, height: int,
                config: DecodeConfig) -> Tuple[int, int]:
  """Smallest decode size that still gives the model full resolution."""
  box = crop_box(width, height, config)
  scale = max(config.image_size / (box[2] - box[0]),
              config.image_size / (box[3] - box[1]))
  return (max(1, int(np.ceil(width * scale))),
          max(1, int(np.ceil(height * scale))))


def _to_rgb(image: Image.Image) -> Image.Image:
  """Applies the one colour rule of this module (see module docstring)."""
  mode = image.mode
  if mode == 'P':
    image = image.convert('RGBA' if 'transparency' in image.info else 'RGB')
    mode = image.mode
  elif mode == 'PA':
    image = image.convert('RGBA')
    mode = 'RGBA'
  if mode.startswith('I') or mode == 'F':
    image = _high_depth_to_l(image)
    mode = 'L'
  if mode in ('RGBA', 'LA', 'RGBa', 'La'):
    rgba = image.convert('RGBA')
    background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert('RGB')
  if mode != 'RGB':
    return image.convert('RGB')
  return image


def _high_depth_to_l(image: Image.Image) -> Image.Image:
  """16/32-bit integer or float grayscale to 8 bits.

  Integer images are taken as 16-bit (what PNG and TIFF store): 0..65535
  maps linearly to 0..255, larger values clip. Float images clip to 0..255.
  """
  array = np.asarray(image)
  if image.mode == 'F':
    scaled = np.clip(array, 0, 255)
  else:
    scaled = np.clip(array.astype(np.float64), 0, 65535) * (255.0 / 65535)
  return Image.fromarray(np.round(scaled).astype(np.uint8), mode='L')


def open_reduced(data: bytes, config: DecodeConfig) -> Image.Image:
  """Opens an image lazily, checks its size, and sets up reduced decoding.

  Only the header is read here. For JPEGs larger than needed, ``draft``
  makes the decoder scale by 1/2, 1/4 or 1/8 in the DCT, so the full-size
  pixels are never allocated.

  Raises:
    ImageError: unknown format, unreadable header, or too many pixels.
  """
  image_format = sniff_format(data)
  try:
    image = Image.open(io.BytesIO(data), formats=[image_format])
  except Exception as e:  # Pillow raises many types for bad headers.
    raise ImageError('unreadable_header',
                     f'{image_format} header unreadable: {e}') from e
  width, height = image.size
  if width < 1 or height < 1:
    raise ImageError('empty_image', f'image is {width}x{height}')
  if width * height > config.max_pixels:
    raise ImageError(
        'too_many_pixels',
        f'{width}x{height} = {width * height} pixels exceeds the limit of '
        f'{config.max_pixels} (--max-pixels)')
  try:
    if getattr(image, 'is_animated', False):
      image.seek(0)
  except Exception as e:
    # Probing for animation parses the next frame's header (a GIF's frame
    # 1): damage there raises struct.error and the like, not ImageError.
    raise ImageError('corrupt_image',
                     f'{image_format} frames unreadable: {e}') from e
  if image_format == 'JPEG':
    # EXIF orientation may swap the axes later; the needed size is
    # symmetric in them, so the draft size holds either way.
    image.draft(None, _draft_size(width, height, config))
  return image


def decode_bytes(image: Image.Image) -> int:
  """The most memory decoding an opened image may take: its pixels as
  ``open_reduced`` left them (a JPEG's after ``draft``) at the worst
  measured cost per pixel."""
  return image.width * image.height * DECODE_BYTES_PER_PIXEL


_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# PNG colour types libspng decodes to what Pillow's modes hold: grey, RGB,
# RGBA (pyspng refuses grey with alpha).
_PNG_MODES = {0: 'L', 2: 'RGB', 6: 'RGBA'}
# Chunks after which Pillow's pixels or orientation depend on more than
# the image data: transparency, a palette, APNG frames, EXIF.
_PNG_NOT_PLAIN = (b'tRNS', b'PLTE', b'acTL', b'eXIf')
_PNG_TEXT = (b'tEXt', b'zTXt', b'iTXt')


def plain_png_mode(data: bytes) -> Optional[str]:
  """Pillow's mode for a PNG whose pixels are its image data alone, or
  None.

  Plain: 8-bit grey, RGB or RGBA, standard compression and filtering, and
  no chunk that Pillow reads into the pixels or the orientation
  (``_PNG_NOT_PLAIN``; text chunks whose keyword names EXIF or XMP,
  where Pillow also finds an orientation). Reads the chunk headers only.
  """
  if not data.startswith(_PNG_SIGNATURE):
    return None
  mode, pos = None, len(_PNG_SIGNATURE)
  while pos + 8 <= len(data):
    length, kind = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + min(length, 80)]
    if kind == b'IHDR':
      if len(body) < 13:
        return None
      depth, colour, compression, filtering = body[8:12]
      if depth != 8 or compression or filtering or colour not in _PNG_MODES:
        return None
      mode = _PNG_MODES[colour]
    elif kind in _PNG_NOT_PLAIN:
      return None
    elif kind in _PNG_TEXT:
      keyword = body.split(b'\0', 1)[0].lower()
      if b'exif' in keyword or b'xmp' in keyword:
        return None
    elif kind == b'IEND':
      break
    pos += 12 + length
  return mode


def _decode_plain_png(data: bytes) -> Optional[Image.Image]:
  """A plain PNG (``plain_png_mode``) decoded by libspng, or None for
  Pillow to decode: the image is not plain, or libspng refused it.

  Why not Pillow for these: libspng decodes a PNG in about half Pillow's
  time, and on the GPU path PNG is the costliest image the CPU decodes
  (docs/PERFORMANCE.md). The pixels are the same: PNG is lossless, and
  only images whose pixels are their data alone come here.
  """
  mode = plain_png_mode(data)
  if mode is None:
    return None
  import pyspng  # pylint: disable=import-outside-toplevel
  try:
    pixels = pyspng.load(data)
  except Exception:  # pylint: disable=broad-except
    return None  # Pillow decodes it, or says what is wrong with it
  if pixels.dtype != np.uint8 or pixels.ndim != (2 if mode == 'L' else 3):
    return None
  image = Image.fromarray(pixels)
  return image if image.mode == mode else None


def decode_image(data: bytes, config: DecodeConfig) -> np.ndarray:
  """Decodes and resizes one encoded image.

  Args:
    data: Encoded image bytes in any format Pillow reads.
    config: Size and resize policy.

  Returns:
    ``uint8`` array of shape ``(image_size, image_size, 3)``, RGB.

  Raises:
    ImageError: for any image that cannot be used, with the reason.
  """
  return decode_opened(open_reduced(data, config), data, config)


def decode_opened(image: Image.Image, data: bytes,
                  config: DecodeConfig) -> np.ndarray:
  """Finishes ``decode_image`` for an image that ``open_reduced`` opened
  from ``data``: decodes, turns, converts and resizes it.

  Raises:
    ImageError: the image data cannot be decoded.
  """
  image_format = image.format
  try:
    plain = _decode_plain_png(data) if image_format == 'PNG' else None
    if plain is not None:
      image = plain  # no EXIF or XMP: nothing to turn
    else:
      image.load()
      # In place: turns the image only where its EXIF says so, without
      # copying every upright one (same pixels either way).
      ImageOps.exif_transpose(image, in_place=True)
    image = _to_rgb(image)
  except Exception as e:
    raise ImageError('corrupt_image',
                     f'{image_format} data cannot be decoded: {e}') from e
  box = crop_box(image.width, image.height, config)
  resized = image.resize((config.image_size, config.image_size),
                         Image.Resampling.BILINEAR, box=box)
  return np.asarray(resized, dtype=np.uint8)


# Bump when a change to decoding or resizing changes the pixels an image
# gives: a dataset refresh then recomputes every shard (it is part of the
# model fingerprint, see pipeline/refresh/fingerprints.py).
DECODE_RULES_VERSION = 1


def describe(config: DecodeConfig) -> dict:
  """A plain description of the preprocessing, for the manifest."""
  return {
      'decode_rules_version': DECODE_RULES_VERSION,
      'image_size': config.image_size,
      'resize': config.resize,
      'resize_shorter': config.resize_shorter,
      'interpolation': 'bilinear, antialiased',
      'max_pixels': config.max_pixels,
      'color': ('8-bit RGB; alpha over white; 16-bit scaled; frame 0 of '
                'animations; EXIF orientation applied'),
  }
