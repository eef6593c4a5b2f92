"""The direct nvJPEG binding (``nvjpeg_direct``) on the GPU: it gives
torchvision's pixels exactly, for small and large JPEGs in one batch, from
several threads at once and on a high-priority stream."""
import io
from concurrent import futures

import numpy as np
import pytest
import torch
from torchvision import io as tv_io

from tests import image_zoo
from transforms import imaging
from transforms.gpu import nvjpeg_direct

CONFIG = imaging.DecodeConfig()


@pytest.fixture(scope='module')
def direct():
  print('libnvjpeg candidates:', nvjpeg_direct.library_candidates()[:6])
  return nvjpeg_direct.DirectDecoder(0, CONFIG)


def _jpeg(width: int, height: int, subsampling: int = 2, quality: int = 90,
          name: str = 'chelsea') -> bytes:
  image = image_zoo.photo(name).convert('RGB').resize((width, height))
  out = io.BytesIO()
  image.save(out, 'JPEG', quality=quality, subsampling=subsampling)
  return out.getvalue()


def _torchvision(data: bytes) -> np.ndarray:
  return tv_io.decode_jpeg(
      torch.frombuffer(bytearray(data), dtype=torch.uint8),
      mode=tv_io.ImageReadMode.RGB, device='cuda').cpu().numpy()


FULL_SIZE = [(500, 375, 2), (375, 500, 0), (333, 500, 1), (511, 383, 2),
             (17, 9, 2), (800, 505, 0), (1031, 777, 2), (2053, 1029, 1),
             (2301, 4001, 0)]


def test_pixels_are_torchvisions(direct):
  """Same library, same hardware call: the binding's pixels equal
  torchvision's decode_jpeg, bit for bit, in one batch of mixed sizes."""
  datas = [_jpeg(w, h, s) for w, h, s in FULL_SIZE]
  got = direct.decode_batch(datas)
  for data, pixels, (w, h, _) in zip(datas, got, FULL_SIZE):
    assert tuple(pixels.shape) == (3, h, w)
    np.testing.assert_array_equal(pixels.cpu().numpy(), _torchvision(data))


def test_threads_decode_side_by_side_to_the_same_pixels(direct):
  datas = [_jpeg(w, h, s) for w, h, s in FULL_SIZE]
  alone = [p.cpu().numpy() for p in direct.decode_batch(datas)]
  with futures.ThreadPoolExecutor(4) as pool:
    runs = list(pool.map(lambda _: [p.cpu().numpy() for p in
                                    direct.decode_batch(datas)], range(8)))
  for run in runs:
    for got, want in zip(run, alone):
      np.testing.assert_array_equal(got, want)


def test_what_is_not_a_jpeg_header_comes_back_none(direct):
  good = _jpeg(64, 48)
  got = direct.decode_batch([b'not a jpeg at all', good])
  assert got[0] is None and tuple(got[1].shape) == (3, 48, 64)


def test_high_priority_decodes_the_same_pixels():
  datas = [_jpeg(w, h, s) for w, h, s in FULL_SIZE]
  high = nvjpeg_direct.DirectDecoder(0, CONFIG, priority='high')
  normal = nvjpeg_direct.DirectDecoder(0, CONFIG, priority='normal')
  for a, b in zip(high.decode_batch(datas), normal.decode_batch(datas)):
    np.testing.assert_array_equal(a.cpu().numpy(), b.cpu().numpy())
