"""The direct nvJPEG binding's arithmetic, on the CPU: the output size it
allocates for a drafted JPEG is the size Pillow's draft gives the CPU path
(the binding itself runs only on a GPU: tests/gpu)."""
import io

import pytest
from PIL import Image

from tests import image_zoo
from transforms import imaging
from transforms.gpu import nvjpeg_direct

CONFIG = imaging.DecodeConfig()


@pytest.mark.parametrize('width,height', [
    (1024, 768), (1031, 777), (777, 1031), (2100, 1400), (2053, 1029),
    (4000, 2300), (2301, 4001), (4097, 2049), (513, 512), (500, 375)])
def test_drafted_output_shape_is_pillows(width, height):
  out = io.BytesIO()
  image_zoo.photo().convert('RGB').resize((width, height)).save(
      out, 'JPEG', quality=80)
  drafted = imaging.open_reduced(out.getvalue(), CONFIG)
  scale = imaging.draft_scale(width, height, CONFIG)
  assert nvjpeg_direct.output_shape(width, height, scale) == (
      drafted.height, drafted.width)
  if min(width, height) >= 1024:
    assert scale >= 4  # the large ones are drafted (the point of the binding)


def test_library_candidates_try_the_loaders_search_first():
  candidates = nvjpeg_direct.library_candidates()
  assert candidates[0] == 'libnvjpeg.so.13'
  assert all('nvjpeg' in c for c in candidates)


def test_an_unknown_priority_is_refused_before_cuda():
  with pytest.raises(ValueError, match=nvjpeg_direct.PRIORITY_ENV):
    nvjpeg_direct.DirectDecoder.__init__(
        object.__new__(nvjpeg_direct.DirectDecoder), 0, CONFIG, 'urgent')
