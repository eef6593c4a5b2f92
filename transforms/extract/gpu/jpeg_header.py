"""Which JPEGs nvJPEG may decode, judged from their bytes in pure Python.

A batched nvJPEG call fails as a whole when one image in it is bad, and
nvJPEG decodes some valid files differently from libjpeg-turbo (which
Pillow, and so the CPU path, uses). ``screen`` therefore looks at every
image before it goes to the GPU and sends anything nvJPEG cannot or
should not decode to the CPU path (``imaging.decode_image``), whose error
lines and pixels are the reference.

It walks the marker segments by their lengths up to the first SOS and
checks the last bytes for EOI; it never reads the entropy-coded data, so a
typical photo costs a few microseconds. An image goes to the device only
when all of these hold (anything else, however harmless, goes to the CPU):

* SOI, then a marker; EOI at the end, after which only zero bytes or
  whitespace may follow. A truncated file goes to the CPU, where Pillow
  reports it (nvJPEG decodes one without EOI and says nothing); so does
  one with other data after EOI.
* Before SOS only APPn, COM, DQT, DHT, DRI and one SOF segment, each
  with a consistent length and inside the data.
* SOF0 (baseline), SOF1 (extended sequential, Huffman) or SOF2
  (progressive, Huffman). Lossless, arithmetic-coded and hierarchical
  frames, and DAC segments, go to the CPU.
* 8-bit samples; 1 or 3 components (4 is CMYK or YCCK) with distinct ids;
  width and height at least 1 and ``width * height <= max_pixels`` (a
  larger image goes to the CPU path, which reports ``too_many_pixels``).
* Sampling factors of a layout nvJPEG names: for three components,
  chroma 1x1 and luma 1x1, 2x1, 2x2, 1x2 or 4x1 (4:4:4, 4:2:2, 4:2:0,
  4:4:0, 4:1:1); grayscale with any valid factors. nvJPEG decodes a
  grayscale frame marked other than 1x1 wrongly (Pillow writes 2x2 for
  its default 4:2:0), so ``device_bytes`` gives it such a file marked
  1x1: a scan of one component is not interleaved, so its blocks and
  pixels are the same whatever the factors (libjpeg-turbo decodes both
  alike, ``tests/unit/extract/gpu/test_gpu_jpeg_header.py``).
* Plainly YCbCr: three components with an Adobe APP14 segment whose
  transform is not 1 (0 means RGB-coded), or with component ids 'R', 'G',
  'B' (libjpeg-turbo's sign of RGB without JFIF), go to the CPU.
  libjpeg-turbo decodes such files as RGB; nvJPEG converts them from
  YCbCr all the same.
* The first scan is the one libjpeg-turbo and nvJPEG expect: a baseline
  scan holds every component with Ss=0, Se=63, Ah=Al=0; a progressive one
  starts with a DC scan. Its quantisation and Huffman tables are defined
  before it (libjpeg-turbo would substitute standard Huffman tables).
* Pillow's own header parsing would not fail: JFIF and Adobe segments are
  long enough, ICC segments hold their sequence byte, Photoshop resources
  read as ``JpegImagePlugin.APP`` reads them. MPF (multi-picture) files go
  to the CPU, which Pillow opens as MPO.
* The EXIF orientation is the one ``ImageOps.exif_transpose`` applies:
  a single EXIF APP1 segment with a standard TIFF header and an intact
  first IFD, an orientation entry (if any) of type SHORT and count 1 with
  every entry before it whole, no orientation taken from XMP instead, and
  an XResolution (if any) of type RATIONAL, which Pillow reads on opening
  a file without JFIF density.

The orientation is returned rather than applied: torchvision's
``decode_jpeg`` ignores ``apply_exif_orientation`` on CUDA, so the GPU path
has to transpose the decoded image itself.

The nvJPEG behaviour named here was seen with torchvision 0.26 on an
H200 (CUDA 13).

What the screen cannot see: damage inside the entropy-coded data (a file
cut short and closed with EOI decodes on the CPU with grey rows; nvJPEG
gives other pixels, without an error), Huffman tables with invalid codes,
and segments between progressive scans. The GPU path must still decode a
failed batch image by image. Nor does it check that ``exif_transpose``
can write a rotated image's EXIF back: that fails (and the CPU path
reports ``corrupt_image``) when an entry's type is not the one Pillow
expects for its tag, anywhere in the EXIF, and checking it as Pillow does
costs some 200 microseconds.
"""
import struct
from typing import Callable, Dict, NamedTuple, Optional


class JpegScreen(NamedTuple):
  """What ``screen`` learnt about one image, and where it should decode.

  Attributes:
    on_device: True when nvJPEG may decode the image.
    width: Width in pixels from the frame header, before EXIF orientation
      (what ``Image.open(...).size`` gives); 0 where no frame header was
      read.
    height: Height likewise.
    components: Number of colour components in the frame (0 if unread).
    reason: Why the image goes to the CPU: a fixed phrase, for some
      followed by ': ' and details; '' when on_device.
    progressive: True for a progressive (SOF2) frame.
    subsampling: '4:4:4', '4:2:2', '4:2:0', '4:4:0', '4:1:1' or 'gray';
      other layouts as each component's HxV sampling factors joined by
      ','; '' where not read.
    orientation: The EXIF orientation, 1 to 8, that Pillow's
      ``exif_transpose`` applies (1: none); valid when on_device.
    end: Offset just past the EOI marker; ``data[:end]`` is the JPEG
      without trailing padding, what the GPU should be given.
    gray_factors_at: Offset of a grayscale frame's sampling factors where
      they are not 1x1, which ``device_bytes`` marks 1x1; 0 otherwise.
  """
  on_device: bool
  width: int = 0
  height: int = 0
  components: int = 0
  reason: str = ''
  progressive: bool = False
  subsampling: str = ''
  orientation: int = 1
  end: int = 0
  gray_factors_at: int = 0


# Luma sampling factors (H << 4 | V) with chroma 1x1 -> nvJPEG's name.
_SUBSAMPLING = {0x11: '4:4:4', 0x21: '4:2:2', 0x22: '4:2:0', 0x12: '4:4:0',
                0x41: '4:1:1'}

# Frames and segments that only libjpeg-turbo decodes (or nobody does).
_CPU_MARKERS = {
    0xC3: 'lossless JPEG (SOF3)',
    0xC5: 'hierarchical JPEG (SOF5)',
    0xC6: 'hierarchical JPEG (SOF6)',
    0xC7: 'hierarchical JPEG (SOF7)',
    0xC9: 'arithmetic coding (SOF9)',
    0xCA: 'arithmetic coding (SOF10)',
    0xCB: 'arithmetic coding (SOF11)',
    0xCC: 'arithmetic coding (DAC)',
    0xCD: 'hierarchical arithmetic JPEG (SOF13)',
    0xCE: 'hierarchical arithmetic JPEG (SOF14)',
    0xCF: 'hierarchical arithmetic JPEG (SOF15)',
    0xDE: 'hierarchical JPEG (DHP)',
}

# What may follow EOI: Pillow ignores anything there, but only padding
# is taken as "not truncated, nothing appended".
_PADDING = b'\x00\t\n\r '

_EXIF = b'Exif\x00\x00'
_XMP = b'http://ns.adobe.com/xap/1.0/\x00'
_ICC = b'ICC_PROFILE\x00'
_PHOTOSHOP = b'Photoshop 3.0\x00'

# Bytes per value of each TIFF field type, as Pillow's EXIF reader
# (TiffImagePlugin._load_dispatch) knows them; others it skips.
_TIFF_UNIT = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8,
              11: 4, 12: 8, 13: 4, 16: 8}
# For each TIFF byte order: the Orientation and XResolution tags as bytes,
# and readers of a header's IFD offset, an IFD's entry count, and an entry
# (tag, type, count, value or offset).
_TIFF = {
    b'II*\x00': (b'\x12\x01', b'\x1a\x01', struct.Struct('<L').unpack_from,
                 struct.Struct('<H').unpack_from,
                 struct.Struct('<HHLL').unpack_from),
    b'MM\x00*': (b'\x01\x12', b'\x01\x1a', struct.Struct('>L').unpack_from,
                 struct.Struct('>H').unpack_from,
                 struct.Struct('>HHLL').unpack_from),
}


def screen(data: bytes, max_pixels: int) -> JpegScreen:
  """Decides from its bytes whether nvJPEG may decode an image.

  Never raises: anything unexpected sends the image to the CPU path.

  Args:
    data: The encoded image, any format.
    max_pixels: Largest ``width * height`` for the device (the CPU path's
      ``DecodeConfig.max_pixels``).

  Returns:
    A ``JpegScreen``; see the module docstring for the rules.
  """
  try:
    return _screen(data, max_pixels)
  except Exception as e:  # pylint: disable=broad-except
    # _screen checks its bounds itself; this is only a safety net, for
    # input of a type it does not expect.
    return JpegScreen(False, reason=f'screen failed: {type(e).__name__}')


class _Header:
  """What the header segments before the first SOS said, as they are
  read."""
  __slots__ = ('frame', 'precision', 'width', 'height', 'components',
               'ids', 'sampling', 'tables', 'factors_at', 'quant', 'dc',
               'ac', 'adobe', 'exif', 'exif_stop', 'xmp', 'xmp_stop')

  def __init__(self):
    self.frame = 0  # the SOF marker, once seen
    self.precision = self.width = self.height = self.components = 0
    self.ids = self.sampling = self.tables = b''
    self.factors_at = 0  # the first component's sampling factors
    self.quant = self.dc = self.ac = 0  # bit masks of the tables defined
    self.adobe = -1  # APP14 transform; -1 without an Adobe segment
    # Start and stop offsets of the EXIF data and of the last XMP text.
    self.exif = self.exif_stop = self.xmp = self.xmp_stop = 0


# Each segment's parser reads data[start:stop] into the header; it returns
# the screen of an image that goes to the CPU, or None where the image may
# stay on the device.
_Parser = Callable[[bytes, int, int, _Header], Optional[JpegScreen]]


def _cpu(reason: str) -> JpegScreen:
  return JpegScreen(False, reason=reason)


def _dht(data: bytes, start: int, stop: int,
         header: _Header) -> Optional[JpegScreen]:
  """DHT: one or more Huffman tables."""
  p = start
  while p < stop:
    kind = data[p]
    count = sum(data[p + 1:p + 17])
    if kind & 0xEC or p + 17 + count > stop:
      return _cpu('bad DHT segment')
    if kind & 0x10:
      header.ac |= 1 << (kind & 3)
    else:
      # libjpeg-turbo rejects DC symbols above 15 when the scan starts.
      if count and max(data[p + 17:p + 17 + count]) > 15:
        return _cpu('bad DHT segment')
      header.dc |= 1 << (kind & 3)
    p += 17 + count
  return None


def _dqt(data: bytes, start: int, stop: int,
         header: _Header) -> Optional[JpegScreen]:
  """DQT: one or more quantisation tables, 8- or 16-bit."""
  p = start
  while p < stop:
    kind = data[p]
    if kind & 0xEC:
      return _cpu('bad DQT segment')
    header.quant |= 1 << (kind & 3)
    p += 129 if kind & 0x10 else 65
  return None if p == stop else _cpu('bad DQT segment')


def _app(data: bytes, start: int, stop: int,
         header: _Header) -> Optional[JpegScreen]:
  """APP0-APP15: what Pillow or nvJPEG read of them."""
  marker = data[start - 3]
  if marker == 0xE1:
    if data.startswith(_EXIF, start, stop):
      if header.exif:  # Pillow would join their data
        return _cpu('more than one EXIF segment')
      header.exif, header.exif_stop = start + 6, stop
    elif data.startswith(_XMP, start, stop):
      # Pillow keeps the last.
      header.xmp, header.xmp_stop = start + len(_XMP), stop
  elif marker == 0xE0:
    # Pillow fails on a JFIF segment of fewer than 7 bytes, and
    # libjpeg-turbo ignores one of fewer than 14.
    if data.startswith(b'JFIF', start, stop) and stop - start < 14:
      return _cpu('short JFIF segment')
  elif marker == 0xE2:
    if data.startswith(_ICC, start, stop):
      if stop - start < 14:  # Pillow indexes the sequence byte
        return _cpu('short ICC segment')
    elif data.startswith(b'MPF\x00', start, stop):
      return _cpu('multi-picture (MPF) file')
  elif marker == 0xEE:
    if data.startswith(b'Adobe', start, stop):
      if stop - start < 12:
        return _cpu('short Adobe segment')
      header.adobe = data[start + 11]
  elif marker == 0xED:
    if data.startswith(_PHOTOSHOP, start, stop) and not _photoshop_ok(
        data, start, stop):
      return _cpu('Photoshop segment Pillow fails on')
  return None


def _sof(data: bytes, start: int, stop: int,
         header: _Header) -> Optional[JpegScreen]:
  """SOF0, SOF1 (baseline, extended) or SOF2 (progressive): the frame."""
  if header.frame:
    return _cpu('more than one SOF segment')
  header.frame = data[start - 3]
  if stop - start < 6:
    return _cpu('bad SOF segment')
  header.precision = data[start]
  header.height = data[start + 1] << 8 | data[start + 2]
  header.width = data[start + 3] << 8 | data[start + 4]
  header.components = data[start + 5]
  if stop - start != 6 + 3 * header.components:
    return JpegScreen(False, header.width, header.height, header.components,
                      'bad SOF segment')
  specs = data[start + 6:stop]
  header.ids, header.sampling, header.tables = (specs[0::3], specs[1::3],
                                                specs[2::3])
  header.factors_at = start + 7  # the first component's
  return None


def _dri(data: bytes, start: int, stop: int,
         header: _Header) -> Optional[JpegScreen]:
  """DRI: a restart interval, two bytes."""
  del data, header
  return None if stop - start == 2 else _cpu('bad DRI segment')


def _com(data: bytes, start: int, stop: int,
         header: _Header) -> Optional[JpegScreen]:
  """COM: a comment, nothing to check."""
  del data, start, stop, header
  return None


# The segments that may come before the first SOS, by marker; any other
# sends the image to the CPU (``_CPU_MARKERS`` says why, where it knows).
_SEGMENTS: Dict[int, _Parser] = {
    0xC4: _dht, 0xDB: _dqt, 0xC0: _sof, 0xC1: _sof, 0xC2: _sof,
    0xDD: _dri, 0xFE: _com, **{marker: _app for marker in range(0xE0, 0xF0)}}
_SOS = 0xDA


def _screen(data: bytes, max_pixels: int) -> JpegScreen:
  """``screen`` without its safety net (the tests call this one): the
  file's ends, its header segments up to the first SOS (``_SEGMENTS``),
  then the frame and the first scan they describe."""
  n = len(data)
  if n < 4 or data[0] != 0xFF or data[1] != 0xD8 or data[2] != 0xFF:
    return JpegScreen(False, reason='empty' if not n else 'not a JPEG')
  end = n
  if data[n - 2] != 0xFF or data[n - 1] != 0xD9:
    end = len(data.rstrip(_PADDING))
    if end < 4 or data[end - 2] != 0xFF or data[end - 1] != 0xD9:
      return JpegScreen(False, reason='no EOI at the end')
  limit = end - 2  # header segments lie before EOI

  header = _Header()
  pos = 2
  while True:
    if pos + 4 > limit:
      return JpegScreen(False, reason='header runs past the end')
    if data[pos] != 0xFF:
      return JpegScreen(False, reason=f'no marker after a segment: byte {pos}')
    marker = data[pos + 1]
    start = pos + 4
    stop = pos + 2 + (data[pos + 2] << 8 | data[pos + 3])
    if stop < start or stop > limit:
      return JpegScreen(False, reason='segment length out of bounds')
    if marker == _SOS:  # the header ends here
      break
    parse = _SEGMENTS.get(marker)
    if parse is None:
      reason = _CPU_MARKERS.get(marker)
      if reason is None:
        reason = f'unexpected marker before SOS: 0xFF{marker:02X}'
      return JpegScreen(False, header.width, header.height,
                        header.components, reason)
    failed = parse(data, start, stop, header)
    if failed is not None:
      return failed
    pos = stop
  if not header.frame:
    return JpegScreen(False, reason='no SOF segment before SOS')
  return _screen_frame(data, header, max_pixels, pos, stop, limit, end)


def _screen_frame(data: bytes, header: _Header, max_pixels: int, sos: int,
                  stop: int, limit: int, end: int) -> JpegScreen:
  """The frame's checks and the first scan's (SOS at ``sos``, its segment
  ending at ``stop``), then the orientation: the screen of a file whose
  header segments passed."""
  width, height = header.width, header.height
  components, sampling = header.components, header.sampling
  progressive = header.frame == 0xC2

  def cpu(reason, subsampling=''):
    return JpegScreen(False, width, height, components, reason, progressive,
                      subsampling)

  if header.precision != 8:
    return cpu(f'not 8-bit samples: {header.precision}')
  if components == 4:
    return cpu('4 components (CMYK or YCCK)')
  if components != 1 and components != 3:
    return cpu(f'unsupported components: {components}')
  if not width or not height:
    return cpu(f'empty frame: {width}x{height}')
  if width * height > max_pixels:
    return cpu(f'too many pixels: {width}x{height} = {width * height} > '
               f'{max_pixels}')
  if max(header.tables) > 3:
    return cpu('bad SOF segment')
  # Only known layouts pass, so invalid factors (0, above 4) fail here too.
  if components == 1:
    subsampling = 'gray' if (1 <= sampling[0] >> 4 <= 4 and
                             1 <= sampling[0] & 15 <= 4) else ''
  else:
    subsampling = '' if sampling[1] != 0x11 or sampling[2] != 0x11 else (
        _SUBSAMPLING.get(sampling[0], ''))
  if not subsampling:
    return cpu('unusual sampling factors', ','.join(
        f'{s >> 4}x{s & 15}' for s in sampling))
  ids = header.ids
  if components == 3:
    if ids[0] == ids[1] or ids[0] == ids[2] or ids[1] == ids[2]:
      return cpu('repeated component id', subsampling)
    if header.adobe >= 0 and header.adobe != 1:
      return cpu(f'Adobe colour transform: {header.adobe}', subsampling)
    if ids == b'RGB':
      return cpu("component ids 'R', 'G', 'B'", subsampling)
  for table in header.tables:
    if not header.quant >> table & 1:
      return cpu('quantisation table missing', subsampling)

  # The first scan.
  start = sos + 4
  scan = data[start + 1:stop - 3]
  if len(scan) != 2 * data[start] or not scan:
    return cpu('bad SOS segment', subsampling)
  first, last, approx = data[stop - 3], data[stop - 2], data[stop - 1]
  members = scan[0::2]
  if members != ids and (len(set(members)) != len(members) or any(
      member not in ids for member in members)):
    return cpu('bad SOS segment', subsampling)
  for selector in scan[1::2]:
    if not header.dc >> (selector >> 4) & 1 or (
        not progressive and not header.ac >> (selector & 15) & 1):
      return cpu('Huffman table missing', subsampling)
  if progressive:
    if first or last or approx >> 4 or approx > 13:
      return cpu('unusual first progressive scan', subsampling)
  elif first or last != 63 or approx or len(members) != components:
    return cpu('unusual baseline scan', subsampling)
  if stop >= limit:
    return cpu('no entropy-coded data', subsampling)

  orientation = 0
  if header.exif:
    orientation = _exif_orientation(data, header.exif, header.exif_stop)
    if orientation < 0:
      return cpu('EXIF Pillow may read differently', subsampling)
  if not orientation:
    # Pillow then takes the orientation from XMP; rare enough for the CPU.
    if header.xmp and data.find(b'tiff:Orientation', header.xmp,
                                header.xmp_stop) >= 0:
      return cpu('orientation in XMP', subsampling)
    orientation = 1
  elif orientation > 8:
    orientation = 1  # exif_transpose ignores values it does not know
  return JpegScreen(True, width, height, components, '', progressive,
                    subsampling, orientation, end,
                    header.factors_at if components == 1 and
                    sampling[0] != 0x11 else 0)


def device_bytes(data: bytes, screen: JpegScreen) -> bytes:
  """The JPEG to give nvJPEG for an image that ``screen`` let through:
  ``data`` without what follows EOI, and a grayscale frame's sampling
  factors marked 1x1 (same pixels; see the module's notes)."""
  if not screen.gray_factors_at:
    return data if screen.end >= len(data) else data[:screen.end]
  marked = bytearray(data[:screen.end])
  marked[screen.gray_factors_at] = 0x11
  return bytes(marked)


def _photoshop_ok(data: bytes, start: int, stop: int) -> bool:
  """Whether ``JpegImagePlugin.APP`` reads a Photoshop segment without an
  IndexError, which fails ``Image.open``.

  Pillow reads a resource's name length without checking that the segment
  still has a byte there; running out of bytes anywhere else raises a
  struct.error, which it catches and stops reading. Offsets here are from
  the segment's start, as Pillow's are (they decide the padding).
  """
  length = stop - start
  r = len(_PHOTOSHOP)
  while data.startswith(b'8BIM', start + r, stop):
    code = data[start + r + 4:start + r + 6]
    r += 6
    if r > length:
      return True
    if r == length:
      return False
    r += 1 + data[start + r]
    r += r & 1
    if r + 4 > length:
      return True
    size = int.from_bytes(data[start + r:start + r + 4], 'big')
    r += 4
    if code == b'\x03\xed' and min(size, length - r) < 14:
      return True  # ResolutionInfo too short to unpack
    r += size
    r += r & 1
  return True


def _exif_orientation(data: bytes, start: int, stop: int) -> int:
  """The orientation Pillow reads from the EXIF data in data[start:stop].

  Returns:
    The value of a SHORT orientation entry of the first IFD; 0 when there
    is none; -1 where Pillow's reading may differ from this one or fail:
    a non-standard TIFF header, a cut first IFD, an orientation of another
    type or given twice, an earlier entry whose data lies outside the
    segment (Pillow stops reading the IFD there), or an XResolution that
    is not a RATIONAL (``JpegImageFile._read_dpi_from_exif`` then may
    raise an IndexError, which fails ``Image.open``).
  """
  size = stop - start
  layout = _TIFF.get(data[start:start + 4]) if size >= 8 else None
  if layout is None:
    return -1
  orientation_tag, resolution_tag, u32, u16, entry = layout
  ifd = u32(data, start + 4)[0]
  if ifd + 2 > size:
    return -1
  first = start + ifd + 2
  entries_end = first + 12 * u16(data, first - 2)[0]
  if entries_end + 4 > stop:
    return -1
  p = _find_entry(data, resolution_tag, first, entries_end)
  if p >= 0 and entry(data, p)[1] != 5:
    return -1
  p = _find_entry(data, orientation_tag, first, entries_end)
  if p < 0:
    return 0
  if _find_entry(data, orientation_tag, p + 12, entries_end) >= 0:
    return -1
  _, kind, count, _ = entry(data, p)
  if kind != 3 or count != 1:
    return -1
  # Pillow stops reading the IFD at an entry whose data is out of bounds;
  # the orientation is only read if every entry before it is whole.
  for e in range(first, p, 12):
    _, kind, count, offset = entry(data, e)
    length = _TIFF_UNIT.get(kind, 0) * count
    if length > 4 and offset + length > size:
      return -1
  return u16(data, p + 8)[0]


def _find_entry(data: bytes, tag: bytes, first: int, stop: int) -> int:
  """Offset of the first IFD entry at or after ``first`` (an entry's start)
  whose tag is ``tag``, or -1: bytes.find, not a loop over entries."""
  p = data.find(tag, first, stop)
  while p >= 0 and (p - first) % 12:
    p = data.find(tag, p + 1, stop)
  return p
