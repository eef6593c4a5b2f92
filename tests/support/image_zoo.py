"""Real and deliberately bad images for the tests, made in memory.

Each maker returns encoded bytes. The good ones derive from real photos
(scikit-image's astronaut and cat), so the model sees natural statistics.
"""
import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image

from pipeline import demo


@functools.lru_cache(maxsize=1)
def _photos():
  # Read the photo files once; every maker below starts from them.
  return demo.real_photos()


def photo(name: str = 'chelsea') -> Image.Image:
  return _photos()[name].convert('RGB')  # a new image: callers may change it


def encode(image: Image.Image, image_format: str, **params) -> bytes:
  out = io.BytesIO()
  image.save(out, image_format, **params)
  return out.getvalue()


def jpeg(name: str = 'chelsea', size=None, quality: int = 90) -> bytes:
  image = photo(name)
  if size:
    image = image.resize(size, Image.Resampling.BILINEAR)
  return encode(image, 'JPEG', quality=quality)


def png(name: str = 'chelsea') -> bytes:
  return encode(photo(name), 'PNG')


def truncated_jpeg() -> bytes:
  data = jpeg()
  return data[:len(data) // 2]


def text_as_jpg() -> bytes:
  return b'This is a text file that someone named photo.jpg\n' * 20


def cmyk_jpeg() -> bytes:
  return encode(photo().convert('CMYK'), 'JPEG', quality=90)


def grayscale_jpeg() -> bytes:
  return encode(photo().convert('L'), 'JPEG', quality=90)


def png16() -> bytes:
  gray = np.asarray(photo().convert('L'), dtype=np.uint16) * 257
  return encode(Image.fromarray(gray), 'PNG')


def rgba_png() -> bytes:
  image = photo().convert('RGBA')
  alpha = np.full(image.size[::-1], 255, np.uint8)
  alpha[:, : image.size[0] // 2] = 0  # left half fully transparent
  image.putalpha(Image.fromarray(alpha))
  return encode(image, 'PNG')


def upright_png() -> bytes:
  return encode(photo('astronaut').resize((300, 200)), 'PNG')


def exif_rotated_png() -> bytes:
  """The upright image stored rotated, with EXIF orientation 6.

  Orientation 6 says "rotate 90 degrees clockwise to display"; the stored
  pixels are therefore the upright image rotated 90 degrees counter-
  clockwise.
  """
  upright = photo('astronaut').resize((300, 200))
  stored = upright.transpose(Image.Transpose.ROTATE_90)
  exif = Image.Exif()
  exif[0x0112] = 6
  return encode(stored, 'PNG', exif=exif.tobytes())


def animated_gif() -> bytes:
  first = photo('chelsea').resize((120, 80))
  second = photo('coffee').resize((120, 80))
  out = io.BytesIO()
  first.save(out, 'GIF', save_all=True, append_images=[second], duration=100,
             loop=0)
  return out.getvalue()


def first_gif_frame() -> bytes:
  return encode(photo('chelsea').resize((120, 80)), 'GIF')


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
  return (struct.pack('>I', len(payload)) + kind + payload +
          struct.pack('>I', zlib.crc32(kind + payload) & 0xffffffff))


def huge_header_png(side: int = 30000) -> bytes:
  """A PNG whose header claims side x side pixels, with almost no data."""
  header = struct.pack('>IIBBBBB', side, side, 8, 2, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', header) +
          _png_chunk(b'IDAT', zlib.compress(b'\x00' * 64)) +
          _png_chunk(b'IEND', b''))


def huge_header_jpeg(side: int = 30000) -> bytes:
  """A small real JPEG whose frame header is patched to side x side."""
  data = bytearray(jpeg(size=(64, 48)))
  marker = data.find(b'\xff\xc0')
  struct.pack_into('>HH', data, marker + 5, side, side)
  return bytes(data)


def one_by_one() -> bytes:
  return encode(Image.new('RGB', (1, 1), (200, 30, 40)), 'PNG')


def one_by_5000() -> bytes:
  column = np.linspace(0, 255, 5000, dtype=np.uint8)
  pixels = np.stack([column, 255 - column, column // 2], axis=-1)
  return encode(Image.fromarray(pixels[:, None, :]), 'PNG')


def big_jpeg(size=(4000, 3000)) -> bytes:
  return jpeg('astronaut', size=size, quality=85)


# name -> (maker, expected error_type or None for a usable image)
ZOO = {
    'zero_byte.jpg': (lambda: b'', 'empty'),
    'truncated.jpg': (truncated_jpeg, 'corrupt_image'),
    'text.jpg': (text_as_jpg, 'unknown_format'),
    'png_named.jpg': (png, None),
    'cmyk.jpg': (cmyk_jpeg, None),
    'grayscale.jpg': (grayscale_jpeg, None),
    'sixteen_bit.png': (png16, None),
    'rgba.png': (rgba_png, None),
    'exif_rotated.png': (exif_rotated_png, None),
    'upright.png': (upright_png, None),
    'animated.gif': (animated_gif, None),
    'bomb.png': (huge_header_png, 'too_many_pixels'),
    'bomb.jpg': (huge_header_jpeg, 'too_many_pixels'),
    'one_by_one.png': (one_by_one, None),
    'one_by_5000.png': (one_by_5000, None),
}


def with_orientation(value: int) -> Image.Image:
  image = photo('chelsea').resize((150, 90))
  image.getexif()[0x0112] = value
  return image


def rotated_jpeg(value: int) -> bytes:
  image = with_orientation(value)
  out = io.BytesIO()
  image.save(out, 'JPEG', quality=95, exif=image.getexif())
  return out.getvalue()


def gray_jpeg(size, subsampling: int, **params) -> bytes:
  """A grayscale JPEG of ``size`` with a gradient and noise; Pillow marks
  its one component 1x1 (subsampling 0), 2x1 (1) or 2x2 (2)."""
  width, height = size
  rng = np.random.default_rng(width * 1000 + height)
  pixels = (rng.integers(0, 80, (height, width)) +
            np.arange(width)[None, :] % 170).astype(np.uint8)
  out = io.BytesIO()
  Image.fromarray(pixels, 'L').save(out, 'JPEG', quality=85,
                                    subsampling=subsampling, **params)
  return out.getvalue()
