"""EXIF orientation on the GPU path: nvJPEG returns the stored pixels, so
the path turns them itself (``transforms/extract/gpu/orientation.py``)."""

import numpy as np
import pytest
from PIL import ImageOps

from tests.support.image_zoo import rotated_jpeg, with_orientation
from transforms.decode import imaging
from transforms.decode.decode_images import decode_record
from transforms.extract.gpu import decoders, device_batches, orientation
from transforms.records import ImageRecord

CONFIG = imaging.DecodeConfig()


@pytest.mark.parametrize('value', range(1, 9))
def test_ops_give_pillows_exif_transpose(value):
  image = with_orientation(value)
  want = np.asarray(ImageOps.exif_transpose(image))
  got = orientation.apply_numpy(np.asarray(image), value)
  np.testing.assert_array_equal(got, want)
  assert orientation.swaps_axes(value) == (want.shape[:2] != (90, 150))


def _device_pixels(record):
  """The GPU path's pixels for one JPEG on the stand-in: decoded as stored,
  turned by the ragged resize's addresses."""
  stand_in = decoders.PillowStandIn(CONFIG, 4)
  batch, errors = device_batches.batch_of([record], CONFIG)
  assert not errors and len(batch.device) == 1  # screened for the device
  decoded, _, _, _ = device_batches.decode_on_device(batch, stand_in, CONFIG)
  return np.asarray(stand_in.resize_batch(
      [(p, turn) for _, p, turn in decoded], []))[0]


@pytest.mark.parametrize('value', [3, 6, 8])
def test_device_path_gives_the_cpu_paths_upright_pixels(value):
  record = ImageRecord(f'turned-{value}', 'test', rotated_jpeg(value))
  want = decode_record(record, CONFIG).pixels
  np.testing.assert_array_equal(_device_pixels(record), want)
  # Without the turn the pixels differ: the test can fail.
  unturned = _device_pixels(ImageRecord('plain', 'test', rotated_jpeg(1)))
  assert not np.array_equal(unturned, want)
