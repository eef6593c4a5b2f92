"""Pure decoding tests: no Beam, no model."""
import io
import time

import numpy as np
import pytest
from PIL import Image

from tests.support import image_zoo
from transforms.decode import imaging

CONFIG = imaging.DecodeConfig()


@pytest.mark.parametrize('name', sorted(image_zoo.ZOO))
def test_zoo_image_decodes_or_fails_with_its_reason(name):
  maker, expected_error = image_zoo.ZOO[name]
  data = maker()
  if expected_error is None:
    pixels = imaging.decode_image(data, CONFIG)
    assert pixels.shape == (224, 224, 3)
    assert pixels.dtype == np.uint8
  else:
    with pytest.raises(imaging.ImageError) as raised:
      imaging.decode_image(data, CONFIG)
    assert raised.value.error_type == expected_error
    assert str(raised.value)


def test_format_comes_from_magic_bytes_not_name():
  assert imaging.sniff_format(image_zoo.png()) == 'PNG'
  assert imaging.sniff_format(image_zoo.jpeg()) == 'JPEG'
  assert imaging.sniff_format(image_zoo.animated_gif()) == 'GIF'
  with pytest.raises(imaging.ImageError):
    imaging.sniff_format(image_zoo.text_as_jpg())


def test_exif_rotation_gives_the_upright_pixels():
  rotated = imaging.decode_image(image_zoo.exif_rotated_png(), CONFIG)
  upright = imaging.decode_image(image_zoo.upright_png(), CONFIG)
  np.testing.assert_array_equal(rotated, upright)
  # Without the EXIF tag the stored pixels differ: the test can fail.
  stored = Image.open(io.BytesIO(image_zoo.exif_rotated_png()))
  assert stored.size == (200, 300)


def test_animated_gif_uses_frame_zero():
  animated = imaging.decode_image(image_zoo.animated_gif(), CONFIG)
  first = imaging.decode_image(image_zoo.first_gif_frame(), CONFIG)
  assert np.abs(animated.astype(int) - first.astype(int)).mean() < 2


def test_grayscale_and_sixteen_bit_become_equal_channel_rgb():
  for data in (image_zoo.grayscale_jpeg(), image_zoo.png16()):
    pixels = imaging.decode_image(data, CONFIG)
    assert (pixels[..., 0] == pixels[..., 1]).all()
    assert (pixels[..., 1] == pixels[..., 2]).all()
    assert pixels.max() > 150 and pixels.min() < 100  # full range kept


def test_sixteen_bit_scales_to_the_eight_bit_values():
  eight = np.asarray(image_zoo.photo().convert('L'))
  decoded = imaging.decode_image(
      image_zoo.png16(), imaging.DecodeConfig(resize='squash',
                                              image_size=224))
  reference = imaging.decode_image(
      image_zoo.encode(Image.fromarray(eight), 'PNG'),
      imaging.DecodeConfig(resize='squash', image_size=224))
  assert np.abs(decoded.astype(int) - reference.astype(int)).max() <= 1


def test_alpha_is_composited_onto_white():
  pixels = imaging.decode_image(image_zoo.rgba_png(),
                                imaging.DecodeConfig(resize='squash'))
  assert (pixels[:, :100] == 255).all()  # transparent left half is white
  assert pixels[:, 130:].mean() < 250


def test_cmyk_jpeg_keeps_its_colours():
  cmyk = imaging.decode_image(image_zoo.cmyk_jpeg(), CONFIG).astype(int)
  rgb = imaging.decode_image(image_zoo.jpeg(), CONFIG).astype(int)
  assert np.abs(cmyk - rgb).mean() < 12


def test_bomb_is_refused_from_the_header_without_decoding():
  for data in (image_zoo.huge_header_png(), image_zoo.huge_header_jpeg()):
    start = time.perf_counter()
    with pytest.raises(imaging.ImageError) as raised:
      imaging.decode_image(data, CONFIG)
    assert raised.value.error_type == 'too_many_pixels'
    assert '30000x30000' in str(raised.value)
    # Decoding 900 megapixels would take seconds and gigabytes.
    assert time.perf_counter() - start < 0.5


def test_large_jpeg_is_decoded_at_reduced_size():
  data = image_zoo.big_jpeg((4000, 3000))
  image = imaging.open_reduced(data, CONFIG)
  # DCT scaling by 1/8 gives 500x375; shorter side still >= 256 * 224/224.
  assert image.size == (500, 375)
  pixels = imaging.decode_image(data, CONFIG)
  assert pixels.shape == (224, 224, 3)


def test_small_jpeg_is_not_reduced():
  data = image_zoo.jpeg(size=(300, 260))
  assert imaging.open_reduced(data, CONFIG).size == (300, 260)


def test_center_crop_matches_resize_then_crop():
  image = image_zoo.photo('coffee')  # 600x400
  data = image_zoo.encode(image, 'PNG')
  pixels = imaging.decode_image(data, CONFIG).astype(int)
  scaled = image.resize((384, 256), Image.Resampling.BILINEAR)
  left = (384 - 224) // 2
  expected = np.asarray(scaled.crop((left, 16, left + 224, 240))).astype(int)
  assert np.abs(pixels - expected).mean() < 3


def test_squash_keeps_the_whole_image():
  image = Image.new('RGB', (400, 100), (0, 0, 0))
  image.paste((255, 255, 255), (0, 0, 40, 100))  # white left tenth
  pixels = imaging.decode_image(image_zoo.encode(image, 'PNG'),
                                imaging.DecodeConfig(resize='squash'))
  assert pixels[:, :15].min() > 200  # still there after squash
  cropped = imaging.decode_image(image_zoo.encode(image, 'PNG'), CONFIG)
  assert cropped.max() == 0  # centre crop cuts it away


def test_thin_image_resizes_without_a_huge_intermediate():
  box = imaging.crop_box(1, 5000, CONFIG)
  assert box[2] - box[0] == pytest.approx(0.875)
  pixels = imaging.decode_image(image_zoo.one_by_5000(), CONFIG)
  assert pixels.shape == (224, 224, 3)


def test_config_rejects_unknown_policy():
  with pytest.raises(ValueError):
    imaging.DecodeConfig(resize='stretch')


def _pillow_only(monkeypatch):
  """decode_image with the libspng route off: Pillow decodes every PNG."""
  monkeypatch.setattr(imaging, '_decode_plain_png', lambda data: None)


def _png_variants():
  photo = image_zoo.photo('astronaut').resize((301, 257))
  rgba = photo.convert('RGBA')
  rgba.putalpha(Image.linear_gradient('L').resize(photo.size))
  from PIL import PngImagePlugin  # pylint: disable=import-outside-toplevel
  text = PngImagePlugin.PngInfo()
  text.add_text('Software', 'a camera')
  exif = Image.Exif()
  exif[0x0112] = 6  # rotated: Pillow turns it
  xmp = PngImagePlugin.PngInfo()
  xmp.add_itxt('XML:com.adobe.xmp',
               '<x:xmpmeta><tiff:Orientation>8</tiff:Orientation>'
               '</x:xmpmeta>')
  return {  # name: (bytes, whether libspng decodes it)
      'rgb': (image_zoo.encode(photo, 'PNG'), True),
      'grey': (image_zoo.encode(photo.convert('L'), 'PNG'), True),
      'rgba': (image_zoo.encode(rgba, 'PNG'), True),
      'interlaced': (image_zoo.encode(photo, 'PNG', interlace=1), True),
      'with text': (image_zoo.encode(photo, 'PNG', pnginfo=text), True),
      'exif turned': (image_zoo.encode(photo, 'PNG', exif=exif), False),
      'xmp turned': (image_zoo.encode(photo, 'PNG', pnginfo=xmp), False),
      'grey alpha': (image_zoo.encode(rgba.convert('LA'), 'PNG'), False),
      'palette': (image_zoo.encode(photo.convert('P'), 'PNG'), False),
      'transparent': (image_zoo.encode(photo, 'PNG', transparency=(0, 0, 0)),
                      False),
      'sixteen bit': (image_zoo.png16(), False),
  }


def test_plain_pngs_decode_through_libspng_to_pillows_pixels(monkeypatch):
  import pyspng  # pylint: disable=import-outside-toplevel
  loads = []
  real = pyspng.load
  monkeypatch.setattr(pyspng, 'load', lambda data: loads.append(1) or
                      real(data))
  variants = _png_variants()
  for name, (data, plain) in variants.items():
    for config in (CONFIG, imaging.DecodeConfig(resize='squash')):
      before = len(loads)
      got = imaging.decode_image(data, config)
      assert (len(loads) > before) == plain, name
      with monkeypatch.context() as pillow:
        _pillow_only(pillow)
        want = imaging.decode_image(data, config)
      np.testing.assert_array_equal(got, want, err_msg=name)
  # The orientation that Pillow finds in EXIF and XMP is applied: the
  # turned ones differ from the stored pixels.
  plain_rgb = imaging.decode_image(variants['rgb'][0], CONFIG)
  for name in ('exif turned', 'xmp turned'):
    assert not np.array_equal(
        imaging.decode_image(variants[name][0], CONFIG), plain_rgb), name


def test_a_png_libspng_refuses_gets_pillows_error(monkeypatch):
  data = image_zoo.encode(image_zoo.photo('chelsea'), 'PNG')
  assert imaging.plain_png_mode(data) == 'RGB'
  cut = data[:len(data) // 2]  # the image data ends early
  errors = []
  for pillow in (False, True):
    with monkeypatch.context() as context:
      if pillow:
        _pillow_only(context)
      with pytest.raises(imaging.ImageError) as raised:
        imaging.decode_image(cut, CONFIG)
      errors.append((raised.value.error_type, str(raised.value)))
  assert errors[0] == errors[1] and errors[0][0] == 'corrupt_image'


def test_the_plain_png_screen_reads_the_header():
  rgb = image_zoo.encode(image_zoo.photo('chelsea'), 'PNG')
  assert imaging.plain_png_mode(rgb) == 'RGB'
  assert imaging.plain_png_mode(image_zoo.jpeg()) is None
  assert imaging.plain_png_mode(rgb[:20]) is None  # no whole IHDR
  assert imaging.plain_png_mode(image_zoo.png16()) is None
