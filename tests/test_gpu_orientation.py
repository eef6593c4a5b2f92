"""EXIF orientation on the GPU path: nvJPEG returns the stored pixels, so
the path turns them itself (``transforms/gpu/orientation.py``)."""
import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests import image_zoo
from transforms import imaging
from transforms.decode import decode_record
from transforms.gpu import decoders, device_batches, orientation
from transforms.records import ImageRecord

CONFIG = imaging.DecodeConfig()


def with_orientation(value: int) -> Image.Image:
  image = image_zoo.photo('chelsea').resize((150, 90))
  image.getexif()[0x0112] = value
  return image


@pytest.mark.parametrize('value', range(1, 9))
def test_ops_give_pillows_exif_transpose(value):
  image = with_orientation(value)
  want = np.asarray(ImageOps.exif_transpose(image))
  got = orientation.apply_numpy(np.asarray(image), value)
  np.testing.assert_array_equal(got, want)
  assert orientation.swaps_axes(value) == (want.shape[:2] != (90, 150))


def rotated_jpeg(value: int) -> bytes:
  image = with_orientation(value)
  out = io.BytesIO()
  image.save(out, 'JPEG', quality=95, exif=image.getexif())
  return out.getvalue()


@pytest.mark.parametrize('value', [3, 6, 8])
def test_device_path_gives_the_cpu_paths_upright_pixels(value):
  record = ImageRecord(f'turned-{value}', 'test', rotated_jpeg(value))
  decoded, errors, on_device, _ = device_batches.decode_batch(
      [record], decoders.PillowStandIn(CONFIG), CONFIG)
  assert not errors and on_device == 1  # screened for the device
  want = decode_record(record, CONFIG).pixels
  np.testing.assert_array_equal(decoded[0][1], want)
  # Without the turn the pixels differ: the test can fail.
  unturned = device_batches.decode_batch(
      [ImageRecord('plain', 'test', rotated_jpeg(1))],
      decoders.PillowStandIn(CONFIG), CONFIG)[0][0][1]
  assert not np.array_equal(unturned, want)
