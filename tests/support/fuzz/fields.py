"""Where the declared sizes and lengths are in each image format.

A fuzzer that only flips random bits rarely says "this PNG is 2^31 pixels
wide" with a valid CRC; these locators find such fields in a seed file so
that the strategies can overwrite them with huge, zero or off-by-one values
(and, where the format checks them, recompute the checksum so the lie gets
past the first check).
"""
import re
import struct
import zlib
from typing import Callable, List, NamedTuple, Optional

Fixup = Callable[[bytearray], None]


class Field(NamedTuple):
  """An integer field of an encoded file.

  Attributes:
    offset: Where it starts.
    width: Its size in bytes (for ``text`` fields: of the digits there).
    order: ``big`` or ``little``.
    name: What it is, for failure reports.
    fixup: Recomputes the checksum that covers the field, if any.
    text: A decimal number in ASCII (PPM headers) rather than binary.
  """
  offset: int
  width: int
  order: str
  name: str
  fixup: Optional[Fixup] = None
  text: bool = False


def write_field(data: bytes, field: Field, value: int,
                fix_checksum: bool = True) -> bytes:
  """``data`` with ``field`` set to ``value`` (masked to the field width)."""
  if field.text:
    end = field.offset + field.width
    return data[:field.offset] + str(value).encode() + data[end:]
  buf = bytearray(data)
  end = field.offset + field.width
  if end > len(buf):
    return data
  value &= (1 << (8 * field.width)) - 1
  buf[field.offset:end] = value.to_bytes(field.width, field.order)
  if fix_checksum and field.fixup:
    field.fixup(buf)
  return bytes(buf)


# --------------------------------------------------------------------------
# JPEG: segment lengths and the frame header's size.

_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB,
                0xCD, 0xCE, 0xCF}


def jpeg_fields(data: bytes) -> List[Field]:
  fields = []
  pos = 2
  while pos + 4 <= len(data) and data[pos] == 0xFF:
    marker = data[pos + 1]
    if marker == 0xFF:  # fill byte
      pos += 1
      continue
    length, = struct.unpack('>H', data[pos + 2:pos + 4])
    fields.append(Field(pos + 2, 2, 'big', f'marker {marker:02X} length'))
    if marker in _SOF_MARKERS:
      fields += [Field(pos + 4, 1, 'big', 'sample precision'),
                 Field(pos + 5, 2, 'big', 'height'),
                 Field(pos + 7, 2, 'big', 'width'),
                 Field(pos + 9, 1, 'big', 'components')]
    if marker == 0xDA:  # entropy-coded data follows
      fields.append(Field(pos + 4, 1, 'big', 'scan components'))
      break
    pos += 2 + length
  return fields


# --------------------------------------------------------------------------
# PNG: chunk lengths, IHDR and APNG frame sizes, with CRCs recomputed.


def _png_crc_fixer(start: int, length: int) -> Fixup:
  def fix(buf: bytearray) -> None:
    end = start + 8 + length
    if end + 4 <= len(buf):
      buf[end:end + 4] = struct.pack(
          '>I', zlib.crc32(bytes(buf[start + 4:end])) & 0xffffffff)
  return fix


_PNG_CHUNK_FIELDS = {
    b'IHDR': ((0, 4, 'width'), (4, 4, 'height'), (8, 1, 'bit depth'),
              (9, 1, 'colour type'), (10, 1, 'compression'),
              (12, 1, 'interlace')),
    b'acTL': ((0, 4, 'frames'), (4, 4, 'plays')),
    b'fcTL': ((4, 4, 'frame width'), (8, 4, 'frame height'),
              (12, 4, 'frame x'), (16, 4, 'frame y'), (24, 1, 'dispose'),
              (25, 1, 'blend')),
    b'PLTE': (),
}


def png_fields(data: bytes) -> List[Field]:
  fields = []
  pos = 8
  while pos + 12 <= len(data):
    length, = struct.unpack('>I', data[pos:pos + 4])
    kind = data[pos + 4:pos + 8]
    fields.append(Field(pos, 4, 'big', f'{kind!r} length'))
    fix = _png_crc_fixer(pos, length)
    for offset, width, name in _PNG_CHUNK_FIELDS.get(kind, ()):
      fields.append(Field(pos + 8 + offset, width, 'big', name, fix))
    pos += 12 + length
  return fields


# --------------------------------------------------------------------------
# GIF: screen and frame sizes, sub-block lengths.


def _gif_sub_blocks(data: bytes, pos: int, fields: List[Field]) -> int:
  while pos < len(data) and data[pos]:
    fields.append(Field(pos, 1, 'little', 'sub-block length'))
    pos += 1 + data[pos]
  return pos + 1


def gif_fields(data: bytes) -> List[Field]:
  fields = [Field(6, 2, 'little', 'screen width'),
            Field(8, 2, 'little', 'screen height'),
            Field(10, 1, 'little', 'screen flags')]
  if len(data) < 13:
    return fields
  pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
  while pos < len(data):
    if data[pos] == 0x21 and pos + 1 < len(data):
      pos = _gif_sub_blocks(data, pos + 2, fields)
    elif data[pos] == 0x2C and pos + 10 <= len(data):
      fields += [Field(pos + 1, 2, 'little', 'frame left'),
                 Field(pos + 3, 2, 'little', 'frame top'),
                 Field(pos + 5, 2, 'little', 'frame width'),
                 Field(pos + 7, 2, 'little', 'frame height'),
                 Field(pos + 9, 1, 'little', 'frame flags')]
      flags = data[pos + 9]
      pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
      fields.append(Field(pos, 1, 'little', 'LZW code size'))
      pos = _gif_sub_blocks(data, pos + 1, fields)
    else:
      break
  return fields


# --------------------------------------------------------------------------
# WebP: RIFF and chunk sizes, canvas and frame sizes.

_WEBP_CHUNK_FIELDS = {
    b'VP8X': ((0, 1, 'flags'), (4, 3, 'canvas width-1'),
              (7, 3, 'canvas height-1')),
    b'VP8 ': ((6, 2, 'VP8 width'), (8, 2, 'VP8 height')),
    b'VP8L': ((1, 4, 'VP8L packed size'),),
    b'ANIM': ((4, 2, 'loop count'),),
    b'ANMF': ((0, 3, 'frame x'), (3, 3, 'frame y'), (6, 3, 'frame width-1'),
              (9, 3, 'frame height-1'), (15, 1, 'frame flags')),
    b'ALPH': ((0, 1, 'alpha flags'),),
}


def _webp_chunks(data: bytes, pos: int, end: int, fields: List[Field]):
  while pos + 8 <= end:
    kind = data[pos:pos + 4]
    size, = struct.unpack('<I', data[pos + 4:pos + 8])
    body = pos + 8
    fields.append(Field(pos + 4, 4, 'little', f'{kind!r} size'))
    for offset, width, name in _WEBP_CHUNK_FIELDS.get(kind, ()):
      fields.append(Field(body + offset, width, 'little', name))
    if kind == b'ANMF':
      _webp_chunks(data, body + 16, min(end, body + size), fields)
    pos = body + size + (size & 1)


def webp_fields(data: bytes) -> List[Field]:
  fields = [Field(4, 4, 'little', 'RIFF size')]
  _webp_chunks(data, 12, len(data), fields)
  return fields


# --------------------------------------------------------------------------
# TIFF: IFD offsets, entry counts and values (width, strips, bits, ...).


def tiff_fields(data: bytes) -> List[Field]:
  order = 'little' if data[:2] == b'II' else 'big'
  code = '<' if order == 'little' else '>'
  fields = [Field(4, 4, order, 'first IFD offset')]
  ifd, = struct.unpack(code + 'I', data[4:8])
  seen = set()
  while 8 <= ifd < len(data) - 2 and ifd not in seen and len(seen) < 4:
    seen.add(ifd)
    count, = struct.unpack(code + 'H', data[ifd:ifd + 2])
    fields.append(Field(ifd, 2, order, 'IFD entry count'))
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(data) - 11),
                       12):
      tag, kind = struct.unpack(code + 'HH', data[entry:entry + 4])
      fields.append(Field(entry + 4, 4, order, f'tag {tag} count'))
      width = 2 if kind == 3 else 4  # SHORT values sit first in the slot
      fields.append(Field(entry + 8, width, order, f'tag {tag} value'))
    next_at = ifd + 2 + 12 * count
    if next_at + 4 > len(data):
      break
    fields.append(Field(next_at, 4, order, 'next IFD offset'))
    ifd, = struct.unpack(code + 'I', data[next_at:next_at + 4])
  return fields


# --------------------------------------------------------------------------
# BMP and PPM headers.

_BMP_FIELDS = ((2, 4, 'file size'), (10, 4, 'pixel offset'),
               (14, 4, 'header size'), (18, 4, 'width'), (22, 4, 'height'),
               (26, 2, 'planes'), (28, 2, 'bits per pixel'),
               (30, 4, 'compression'), (34, 4, 'image size'),
               (46, 4, 'colours used'))


def bmp_fields(data: bytes) -> List[Field]:
  del data  # fixed layout
  return [Field(o, w, 'little', n) for o, w, n in _BMP_FIELDS]


def ppm_fields(data: bytes) -> List[Field]:
  match = re.match(rb'P\d\s+(\d+)\s+(\d+)\s+(\d+)', data)
  if not match:
    return []
  return [Field(match.start(i), match.end(i) - match.start(i), 'big', name,
                text=True)
          for i, name in ((1, 'width'), (2, 'height'), (3, 'maxval'))]


_LOCATORS = {'jpg': jpeg_fields, 'png': png_fields, 'gif': gif_fields,
             'webp': webp_fields, 'tif': tiff_fields, 'bmp': bmp_fields,
             'ppm': ppm_fields}


def image_fields(name: str, data: bytes) -> List[Field]:
  """The fields of seed ``name`` (its extension says the format)."""
  return _LOCATORS[name.rsplit('.', 1)[-1]](data)


# --------------------------------------------------------------------------
# Shard framing checksums.


def tar_checksum(buf: bytearray, header: int) -> None:
  """Recomputes the checksum of the tar header at ``header`` in place."""
  if header + 512 > len(buf):
    return
  buf[header + 148:header + 156] = b' ' * 8
  total = sum(buf[header:header + 512])
  buf[header + 148:header + 156] = b'%06o\x00 ' % (total & 0o777777)
