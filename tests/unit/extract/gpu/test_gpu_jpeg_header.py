"""The JPEG screen of the GPU path: pure Python, no GPU, no Beam.

JPEGs are made with Pillow from the demo photos; what Pillow cannot write
(arithmetic coding, odd segments) is made by patching those bytes. Where a
rule exists because Pillow or libjpeg-turbo would read a file differently
from nvJPEG, a test shows that difference too, so it can fail.
"""
import io
import random
import struct

import numpy as np
import pytest
from PIL import Image

from tests.support import image_zoo
from tests.support.image_zoo import gray_jpeg
from transforms.decode import imaging
from transforms.extract.gpu import jpeg_header

MAX_PIXELS = imaging.DecodeConfig().max_pixels
CONFIG = imaging.DecodeConfig()


def screen(data: bytes, max_pixels: int = MAX_PIXELS):
  # The unprotected version: a bug raises here instead of hiding behind
  # screen's safety net.
  # pylint: disable-next=protected-access
  return jpeg_header._screen(data, max_pixels)


def photo_jpeg(size=(451, 300), **params) -> bytes:
  image = image_zoo.photo()
  if size != image.size:
    image = image.resize(size, Image.Resampling.BILINEAR)
  params.setdefault('quality', 90)
  return image_zoo.encode(image, 'JPEG', **params)


def segment(marker: int, payload: bytes) -> bytes:
  return struct.pack('>BBH', 0xFF, marker, len(payload) + 2) + payload


def segments(data: bytes):
  """(marker, start of marker, end of segment) up to and with SOS."""
  found, pos = [], 2
  while True:
    marker, length = data[pos + 1], struct.unpack_from('>H', data, pos + 2)[0]
    found.append((marker, pos, pos + 2 + length))
    if marker == 0xDA:
      return found
    pos += 2 + length


def with_segment(data: bytes, marker: int, payload: bytes) -> bytes:
  """``data`` with a segment inserted right after SOI."""
  return data[:2] + segment(marker, payload) + data[2:]


def without(data: bytes, marker: int) -> bytes:
  for found, start, stop in segments(data):
    if found == marker:
      data = data[:start] + data[stop:]
      return without(data, marker)
  return data


def patch_sof(data: bytes, marker: int) -> bytes:
  sof = data.index(b'\xff\xc0')
  return data[:sof + 1] + bytes([marker]) + data[sof + 2:]


def exif_segment(tiff: bytes) -> bytes:
  return b'Exif\x00\x00' + tiff


def tiff(entries, order: str = '>') -> bytes:
  """A TIFF header and one IFD of (tag, type, count, 4 value bytes)."""
  head = (b'MM\x00*' if order == '>' else b'II*\x00') + struct.pack(
      order + 'L', 8)
  ifd = struct.pack(order + 'H', len(entries)) + b''.join(
      struct.pack(order + 'HHL', tag, kind, count) + value
      for tag, kind, count, value in entries) + b'\x00' * 4
  return head + ifd


def short(value: int, order: str = '>') -> bytes:
  return struct.pack(order + 'HH', value, 0)


def pillow_orientation(data: bytes) -> int:
  """The orientation ImageOps.exif_transpose would apply."""
  with Image.open(io.BytesIO(data)) as image:
    value = image.getexif().get(0x0112, 1)
  return value if value in range(1, 9) else 1


@pytest.mark.parametrize('params, subsampling', [
    ({}, '4:2:0'),
    ({'subsampling': 0}, '4:4:4'),
    ({'subsampling': 1}, '4:2:2'),
    ({'subsampling': 2}, '4:2:0'),
    ({'optimize': True}, '4:2:0'),
    ({'quality': 100}, '4:2:0'),
    ({'restart_marker_blocks': 4}, '4:2:0'),
    ({'comment': b'made by a test'}, '4:2:0'),
    ({'icc_profile': b'p' * 70000}, '4:2:0'),  # spread over two segments
])
def test_baseline_jpegs_go_to_the_device(params, subsampling):
  data = photo_jpeg(**params)
  result = screen(data)
  assert result == jpeg_header.JpegScreen(
      True, 451, 300, 3, '', False, subsampling, 1, len(data))


@pytest.mark.parametrize('params', [{}, {'subsampling': 0},
                                    {'optimize': True}])
def test_progressive_jpegs_go_to_the_device(params):
  result = screen(photo_jpeg(progressive=True, **params))
  assert result.on_device and result.progressive
  assert (result.width, result.height) == (451, 300)


def test_grayscale_goes_to_the_device_as_one_component():
  result = screen(image_zoo.grayscale_jpeg())
  assert result.on_device
  assert (result.components, result.subsampling) == (1, 'gray')


@pytest.mark.parametrize('subsampling,factors', [(1, 0x21), (2, 0x22)])
def test_grayscale_marked_other_than_1x1_goes_to_the_device_marked_1x1(
    subsampling, factors):
  """nvJPEG decodes a grayscale frame marked 2x2 wrongly; the device is
  given it marked 1x1, which libjpeg-turbo decodes to the very pixels of
  the file as it was, at every size (blocks cut at the edges, restart
  intervals): a one-component scan's blocks do not depend on the
  factors."""
  for size in [(1, 1), (7, 9), (8, 8), (15, 17), (16, 16), (33, 1),
               (53, 37), (257, 255), (500, 375)]:
    for params in [{}, {'restart_marker_blocks': 3}]:
      data = gray_jpeg(size, subsampling, **params)
      result = screen(data)
      assert result.on_device, (size, result.reason)
      assert (result.components, result.subsampling) == (1, 'gray')
      assert data[result.gray_factors_at] == factors
      given = jpeg_header.device_bytes(data, result)
      assert given[result.gray_factors_at] == 0x11
      assert len(given) == len(data)
      assert screen(given).gray_factors_at == 0
      np.testing.assert_array_equal(
          np.asarray(Image.open(io.BytesIO(given))),
          np.asarray(Image.open(io.BytesIO(data))))


def test_device_bytes_drop_padding_and_leave_1x1_files_alone():
  data = gray_jpeg((40, 30), 0)
  result = screen(data)
  assert result.on_device and result.gray_factors_at == 0
  assert jpeg_header.device_bytes(data, result) is data
  padded = gray_jpeg((40, 30), 2) + b'\x00' * 7
  result = screen(padded)
  given = jpeg_header.device_bytes(padded, result)
  assert given.endswith(b'\xff\xd9') and len(given) == len(padded) - 7


def test_grayscale_with_invalid_factors_goes_to_the_cpu():
  data = bytearray(gray_jpeg((40, 30), 0))
  sof = data.index(b'\xff\xc0')
  for factors in (0x20, 0x02, 0x51, 0x15):
    data[sof + 11] = factors
    assert screen(bytes(data)).reason == 'unusual sampling factors'


@pytest.mark.parametrize('size', [(1, 1), (17, 5), (5, 17), (500, 375),
                                  (375, 500), (4000, 3)])
@pytest.mark.parametrize('params', [{}, {'subsampling': 0},
                                    {'progressive': True}])
def test_size_is_pillows_size(size, params):
  data = photo_jpeg(size, **params)
  result = screen(data)
  assert result.on_device
  with Image.open(io.BytesIO(data)) as image:
    assert (result.width, result.height) == image.size == size


def test_size_is_before_exif_rotation():
  exif = Image.Exif()
  exif[0x0112] = 6
  data = photo_jpeg((40, 30), exif=exif.tobytes())
  result = screen(data)
  assert (result.width, result.height, result.orientation) == (40, 30, 6)
  assert imaging.open_reduced(data, CONFIG).size == (40, 30)


def test_the_extended_sequential_frame_goes_to_the_device():
  data = patch_sof(photo_jpeg(), 0xC1)
  assert screen(data).on_device
  imaging.decode_image(data, CONFIG)  # libjpeg-turbo reads it as well


@pytest.mark.parametrize('marker, reason', [
    (0xC3, 'lossless'), (0xC5, 'hierarchical'), (0xC6, 'hierarchical'),
    (0xC7, 'hierarchical'), (0xC9, 'arithmetic'), (0xCA, 'arithmetic'),
    (0xCB, 'arithmetic'), (0xCD, 'hierarchical arithmetic'),
    (0xCE, 'hierarchical arithmetic'), (0xCF, 'hierarchical arithmetic'),
])
def test_frames_nvjpeg_cannot_decode_go_to_the_cpu(marker, reason):
  result = screen(patch_sof(photo_jpeg(), marker))
  assert not result.on_device
  assert result.reason.startswith(reason)


def test_an_arithmetic_conditioning_segment_goes_to_the_cpu():
  data = with_segment(photo_jpeg(), 0xCC, b'\x00\x10')
  assert screen(data).reason == 'arithmetic coding (DAC)'


def test_twelve_bit_samples_go_to_the_cpu():
  data = bytearray(photo_jpeg())
  data[data.index(b'\xff\xc0') + 4] = 12
  assert screen(bytes(data)).reason == 'not 8-bit samples: 12'


def test_cmyk_goes_to_the_cpu():
  result = screen(image_zoo.cmyk_jpeg())
  assert not result.on_device
  assert result.components == 4 and 'CMYK' in result.reason
  imaging.decode_image(image_zoo.cmyk_jpeg(), CONFIG)  # which decodes it


@pytest.mark.parametrize('maker, reason', [
    (image_zoo.truncated_jpeg, 'no EOI at the end'),
    (lambda: image_zoo.jpeg()[:-2], 'no EOI at the end'),
    (lambda: image_zoo.jpeg()[:-1], 'no EOI at the end'),
    (image_zoo.png, 'not a JPEG'),
    (image_zoo.text_as_jpg, 'not a JPEG'),
    (lambda: b'', 'empty'),
    (lambda: b'\xff\xd8', 'not a JPEG'),
    (lambda: b'\xff\xd8\xff\xd9', 'header runs past the end'),
])
def test_broken_or_other_files_go_to_the_cpu(maker, reason):
  assert screen(maker()) == jpeg_header.JpegScreen(False, reason=reason)


def test_a_missing_eoi_is_an_error_on_the_cpu_path():
  with pytest.raises(imaging.ImageError, match='truncated'):
    imaging.decode_image(image_zoo.jpeg()[:-2], CONFIG)


@pytest.mark.parametrize('padding', [b'\x00' * 100, b'\n', b'\r\n', b' \t'])
def test_padding_after_eoi_is_allowed_and_cut_off(padding):
  data = photo_jpeg()
  result = screen(data + padding)
  assert result.on_device and result.end == len(data)


def test_data_after_eoi_goes_to_the_cpu():
  assert screen(photo_jpeg() + b'more data').reason == 'no EOI at the end'


def test_too_many_pixels_go_to_the_cpu_which_names_the_error():
  data = photo_jpeg((500, 375))
  assert screen(data, max_pixels=500 * 375).on_device
  result = screen(data, max_pixels=500 * 375 - 1)
  assert not result.on_device
  assert result.reason == 'too many pixels: 500x375 = 187500 > 187499'
  with pytest.raises(imaging.ImageError) as raised:
    imaging.decode_image(
        data, imaging.DecodeConfig(max_pixels=500 * 375 - 1))
  assert raised.value.error_type == 'too_many_pixels'


def test_a_decompression_bomb_goes_to_the_cpu():
  result = screen(image_zoo.huge_header_jpeg())
  assert (result.on_device, result.width, result.height) == (
      False, 30000, 30000)
  assert result.reason.startswith('too many pixels')


def test_an_empty_frame_goes_to_the_cpu():
  data = bytearray(photo_jpeg((64, 48)))
  struct.pack_into('>H', data, data.index(b'\xff\xc0') + 5, 0)
  assert screen(bytes(data)).reason == 'empty frame: 64x0'


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_is_reported_as_pillow_applies_it(orientation):
  exif = Image.Exif()
  exif[0x010F] = 'A camera maker'  # entries before the orientation
  exif[0x0110] = 'A camera model'
  exif[0x0112] = orientation
  data = photo_jpeg((64, 48), exif=exif.tobytes())
  result = screen(data)
  assert result.on_device
  assert result.orientation == orientation == pillow_orientation(data)


@pytest.mark.parametrize('order', ['<', '>'])
def test_exif_orientation_in_either_byte_order(order):
  data = with_segment(photo_jpeg((64, 48)), 0xE1, exif_segment(
      tiff([(0x0112, 3, 1, short(8, order))], order)))
  assert screen(data).orientation == 8 == pillow_orientation(data)


def test_an_unknown_orientation_value_means_none():
  data = with_segment(photo_jpeg((64, 48)), 0xE1, exif_segment(
      tiff([(0x0112, 3, 1, short(9))])))
  assert screen(data).orientation == 1 == pillow_orientation(data)


def test_exif_pillow_may_read_otherwise_goes_to_the_cpu():
  base = photo_jpeg((64, 48))
  orientation = (0x0112, 3, 1, short(6))
  cases = {
      'orientation as LONG': tiff([(0x0112, 4, 1, struct.pack('>L', 6))]),
      'two orientations': tiff([orientation, orientation]),
      'cut IFD': tiff([orientation])[:-6],
      'odd TIFF header': b'MM\x2a\x00' + tiff([orientation])[4:],
      'too short': b'MM\x00*',
  }
  for name, contents in cases.items():
    result = screen(with_segment(base, 0xE1, exif_segment(contents)))
    assert not result.on_device, name
    assert result.reason == 'EXIF Pillow may read differently', name


def test_an_x_resolution_pillow_fails_on_goes_to_the_cpu():
  # Without JFIF density Pillow takes the dpi from EXIF, and a
  # one-character XResolution makes Image.open fail.
  contents = tiff([(0x011A, 2, 2, b'7\x00\x00\x00'),
                   (0x0128, 3, 1, short(2))])
  data = with_segment(without(photo_jpeg((64, 48)), 0xE0), 0xE1,
                      exif_segment(contents))
  assert screen(data).reason == 'EXIF Pillow may read differently'
  with pytest.raises(imaging.ImageError) as raised:
    imaging.decode_image(data, CONFIG)
  assert raised.value.error_type == 'unreadable_header'


@pytest.mark.filterwarnings('ignore::UserWarning')
def test_an_entry_out_of_bounds_hides_the_orientation_from_pillow():
  contents = tiff([(0x010F, 2, 64, struct.pack('>L', 4000)),
                   (0x0112, 3, 1, short(6))])
  data = with_segment(photo_jpeg((64, 48)), 0xE1, exif_segment(contents))
  assert pillow_orientation(data) == 1  # why the rule exists
  assert screen(data).reason == 'EXIF Pillow may read differently'


def test_two_exif_segments_go_to_the_cpu():
  contents = exif_segment(tiff([(0x0112, 3, 1, short(6))]))
  data = with_segment(with_segment(photo_jpeg((64, 48)), 0xE1, contents),
                      0xE1, contents)
  assert screen(data).reason == 'more than one EXIF segment'


def test_orientation_only_in_xmp_goes_to_the_cpu():
  xmp = (b'http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><rdf:Description '
         b'tiff:Orientation="6"/></x:xmpmeta>')
  data = with_segment(photo_jpeg((64, 48)), 0xE1, xmp)
  assert pillow_orientation(data) == 6  # Pillow reads it from XMP
  assert screen(data).reason == 'orientation in XMP'
  # With an EXIF orientation Pillow ignores XMP, and so may the screen.
  exif = exif_segment(tiff([(0x0112, 3, 1, short(3))]))
  both = with_segment(data, 0xE1, exif)
  assert screen(both).orientation == 3 == pillow_orientation(both)


def test_rgb_coded_jpegs_go_to_the_cpu():
  # keep_rgb writes libjpeg-turbo's RGB JPEG: Adobe transform 0, ids RGB.
  data = photo_jpeg((64, 48), keep_rgb=True)
  assert screen(data).reason == 'Adobe colour transform: 0'
  # Without the Adobe segment libjpeg-turbo still sees RGB from the ids.
  no_adobe = without(data, 0xEE)
  assert screen(no_adobe).reason == "component ids 'R', 'G', 'B'"
  # The CPU path decodes both as RGB; read as YCbCr (what nvJPEG does
  # with three components) the colours would be far off.
  expected = imaging.decode_image(photo_jpeg((64, 48)), CONFIG).astype(int)
  for rgb in (data, no_adobe):
    assert np.abs(imaging.decode_image(rgb, CONFIG) - expected).mean() < 3
  as_ycbcr = bytearray(no_adobe)
  sof, sos = no_adobe.index(b'\xff\xc0'), no_adobe.index(b'\xff\xda')
  for index, offset in enumerate((sof + 10, sof + 13, sof + 16, sos + 5,
                                  sos + 7, sos + 9)):
    as_ycbcr[offset] = 1 + index % 3
  as_ycbcr = bytes(as_ycbcr)
  assert screen(as_ycbcr).on_device
  assert np.abs(imaging.decode_image(as_ycbcr, CONFIG) - expected).mean() > 20


def test_an_adobe_segment_marking_ycbcr_is_fine():
  adobe = b'Adobe\x00\x64\x00\x00\x00\x00\x01'
  assert screen(with_segment(photo_jpeg(), 0xEE, adobe)).on_device
  rgb_marked = with_segment(photo_jpeg(), 0xEE, adobe[:-1] + b'\x00')
  assert screen(rgb_marked).reason == 'Adobe colour transform: 0'


def test_a_multi_picture_file_goes_to_the_cpu():
  first = image_zoo.photo().resize((64, 48))
  out = io.BytesIO()
  first.save(out, 'MPO', save_all=True, append_images=[first.rotate(90)])
  assert screen(out.getvalue()).reason == 'multi-picture (MPF) file'


@pytest.mark.parametrize('marker, payload, reason', [
    (0xE0, b'JFIF\x00\x01', 'short JFIF segment'),
    (0xE2, b'ICC_PROFILE\x00\x01', 'short ICC segment'),
    (0xED, b'Photoshop 3.0\x008BIM\x04\x04',
     'Photoshop segment Pillow fails on'),
])
def test_segments_pillow_fails_on_go_to_the_cpu(marker, payload, reason):
  data = with_segment(without(photo_jpeg(), 0xE0), marker, payload)
  assert screen(data).reason == reason
  with pytest.raises(imaging.ImageError) as raised:
    imaging.decode_image(data, CONFIG)
  assert raised.value.error_type == 'unreadable_header'


def test_a_photoshop_segment_pillow_reads_goes_to_the_device():
  resource = b'8BIM\x04\x04\x00\x00' + struct.pack('>L', 5) + b'iptc!\x00'
  data = with_segment(photo_jpeg(), 0xED, b'Photoshop 3.0\x00' + resource * 3)
  assert screen(data).on_device
  imaging.decode_image(data, CONFIG)


def test_unusual_sampling_factors_go_to_the_cpu():
  data = bytearray(photo_jpeg())
  sof = data.index(b'\xff\xc0')
  assert data[sof + 11] == 0x22  # luma of 4:2:0
  for luma, chroma in [(0x22, 0x21), (0x42, 0x11), (0x11, 0x22),
                       (0x33, 0x11), (0x20, 0x11)]:
    data[sof + 11], data[sof + 14] = luma, chroma
    result = screen(bytes(data))
    assert result.reason == 'unusual sampling factors', (luma, chroma)
  assert result.subsampling == '2x0,1x1,1x1'


def test_a_scan_without_its_tables_goes_to_the_cpu():
  data = photo_jpeg()
  assert screen(without(data, 0xC4)).reason == 'Huffman table missing'
  assert screen(without(data, 0xDB)).reason == 'quantisation table missing'


def test_an_unusual_first_scan_goes_to_the_cpu():
  data = photo_jpeg()
  stop = segments(data)[-1][2]
  assert data[stop - 3:stop] == b'\x00\x3f\x00'  # Ss=0, Se=63, Ah=Al=0
  for fields in (b'\x00\x3e\x00', b'\x01\x3f\x00', b'\x00\x3f\x01'):
    patched = data[:stop - 3] + fields + data[stop:]
    assert screen(patched).reason == 'unusual baseline scan', fields
  progressive = photo_jpeg(progressive=True)
  stop = segments(progressive)[-1][2]
  assert progressive[stop - 3:stop - 1] == b'\x00\x00'  # a DC scan
  ac_first = progressive[:stop - 2] + b'\x3f' + progressive[stop - 1:]
  assert screen(ac_first).reason == 'unusual first progressive scan'


def test_inconsistent_lengths_go_to_the_cpu():
  data = photo_jpeg()
  marker, start, stop = segments(data)[1]
  assert marker == 0xDB
  for length in (0, 1, 66, 68, 0xFFFF):
    patched = data[:start + 2] + struct.pack('>H', length) + data[start + 4:]
    assert not screen(patched).on_device, length


def test_any_input_gives_a_screen_and_never_raises():
  assert not jpeg_header.screen(None, MAX_PIXELS).on_device
  data = photo_jpeg((64, 48))
  assert jpeg_header.screen(bytearray(data), MAX_PIXELS).on_device
  assert isinstance(jpeg_header.screen(memoryview(data), MAX_PIXELS),
                    jpeg_header.JpegScreen)


def _small_jpeg(orientation: int) -> bytes:
  """A small JPEG with the segments the screen reads most closely."""
  exif = Image.Exif()
  exif[0x010F] = 'A camera maker'
  exif[0x0112] = orientation
  exif[0x011A] = 72.0
  exif[0x0128] = 2
  data = photo_jpeg((32, 24), exif=exif.tobytes(), quality=80)
  photoshop = (b'Photoshop 3.0\x00' + b'8BIM\x03\xed\x00\x00' +
               struct.pack('>L', 16) + bytes(16) +
               b'8BIM\x04\x04\x00\x00\x00\x00\x00\x02ab')
  xmp = b'http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta/>'
  return with_segment(with_segment(data, 0xED, photoshop), 0xE1, xmp)


def _agrees_with_pillow(data: bytes, result) -> None:
  """What the device path relies on for an image screened on_device."""
  with Image.open(io.BytesIO(data)) as image:
    assert image.format == 'JPEG'
    assert image.size == (result.width, result.height)
    assert len(image.getbands()) == result.components
  assert pillow_orientation(data) == result.orientation


def _flips(data: bytes, count: int, stop: int, seed: int):
  rng = random.Random(seed)
  for trial in range(count):
    mutant = bytearray(data)
    for _ in range(1 + trial % 3):
      mutant[rng.randrange(stop)] ^= 1 << rng.randrange(8)
    yield bytes(mutant)


def test_every_truncation_goes_to_the_cpu():
  data = _small_jpeg(6)
  assert screen(data).on_device
  for length in range(len(data)):
    result = screen(data[:length])
    assert isinstance(result, jpeg_header.JpegScreen)
    assert not result.on_device, length


@pytest.mark.filterwarnings('ignore::UserWarning')  # Pillow on bad EXIF
def test_header_bit_flips_on_device_decode_on_the_cpu():
  # Damage the screen can see: in the segments before the entropy-coded
  # data. What it lets through, the CPU path must decode too.
  data = _small_jpeg(1)
  on_device = 0
  for mutant in _flips(data, 3000, segments(data)[-1][2], seed=1234):
    result = screen(mutant)
    if result.on_device:
      on_device += 1
      _agrees_with_pillow(mutant, result)
      imaging.decode_image(mutant, CONFIG)
  assert 200 < on_device < 2800  # both outcomes were exercised


@pytest.mark.filterwarnings('ignore::UserWarning')
def test_bit_flips_anywhere_never_raise():
  data = _small_jpeg(6)
  on_device = 0
  for mutant in _flips(data, 3000, len(data), seed=99):
    result = screen(mutant)
    assert isinstance(result, jpeg_header.JpegScreen)
    if result.on_device:
      on_device += 1
      _agrees_with_pillow(mutant, result)
  assert 200 < on_device < 2800


def test_random_bytes_never_raise():
  rng = random.Random(99)
  for trial in range(3000):
    body = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if trial % 2:  # make it past the first checks
      body = b'\xff\xd8\xff' + body + b'\xff\xd9'
    result = screen(body)
    assert isinstance(result, jpeg_header.JpegScreen)
    assert not result.on_device


@pytest.mark.parametrize('name', sorted(image_zoo.ZOO))
def test_zoo_images_on_device_decode_on_the_cpu_too(name):
  maker, expected_error = image_zoo.ZOO[name]
  data = maker()
  result = jpeg_header.screen(data, MAX_PIXELS)
  if result.on_device:
    assert expected_error is None
    _agrees_with_pillow(data, result)
  assert result.on_device == (name == 'grayscale.jpg')
