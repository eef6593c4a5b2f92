"""nvJPEG decoding and the resize on the GPU against the CPU decoder."""
import numpy as np
import pytest
import torch
from torchvision import io as tv_io

from tests import image_zoo
from transforms import imaging
from transforms.decode import decode_record
from transforms.gpu import decoders, device_batches, resample
from transforms.records import ErrorRecord, ImageRecord

CONFIG = imaging.DecodeConfig()


@pytest.fixture(scope='module')
def nvjpeg():
  return decoders.NvjpegDecoder(0, CONFIG)


def differences(got: np.ndarray, want: np.ndarray):
  diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
  return float(diff.mean()), float(np.percentile(diff, 99)), int(diff.max())


def test_gpu_resize_gives_the_cpu_rules_pixels(nvjpeg, reference):
  """The same decoded pixels in: the GPU's resize equals resample's
  reference of Pillow's (which tests/test_gpu_resample.py checks against
  Pillow), so any pixel difference left comes from the JPEG decoders."""
  for name, data in reference['jpegs'].items():
    decoded = tv_io.decode_jpeg(torch.frombuffer(bytearray(data),
                                                 dtype=torch.uint8),
                                mode=tv_io.ImageReadMode.RGB)
    height, width = decoded.shape[1:]
    plan = resample.resize_plan(width, height, CONFIG)
    want = resample.apply_plan(decoded.permute(1, 2, 0).numpy(), plan)
    _, rows, cols = nvjpeg._plans(width, height)  # pylint: disable=protected-access
    got = nvjpeg._resize(decoded[None].cuda(), plan, rows, cols)[0]  # pylint: disable=protected-access
    got = got.cpu().numpy()
    diff = np.abs(got.astype(int) - want.astype(int))
    print(f'{name}: resize max diff {diff.max()}, equal {np.mean(diff == 0):.5f}')
    assert diff.max() == 0  # float64 holds Pillow's sums exactly


def test_nvjpeg_pixels_are_close_to_the_cpu_decoders(nvjpeg, reference):
  names = list(reference['jpegs'])
  batch = nvjpeg.decode([reference['jpegs'][n] for n in names],
                        [1] * len(names))
  for index, name in enumerate(names):
    got = batch[index].cpu().numpy()
    assert got.shape == (224, 224, 3) and got.dtype == np.uint8
    mean, p99, worst = differences(got, reference['pixels'][index])
    print(f'{name}: nvJPEG vs CPU path mean {mean:.3f} p99 {p99} max {worst}')
    # The CPU path decodes the 1600x1200 photo at 1/4 size in the DCT;
    # the others differ by the decoders' IDCT and chroma upsampling (an
    # H200 run: means 0.2-0.8, and 1.8 for the grey, high-contrast
    # 'camera'; p99 at most 14).
    assert mean <= 2.5
    assert p99 <= 16
  # One image alone gives what it gives within a batch.
  alone = nvjpeg.decode([reference['jpegs'][names[1]]], [1])[0]
  assert torch.equal(alone, batch[1])


def zoo_records():
  return [ImageRecord(name, 'zoo', maker()) for name, (maker, _) in
          sorted(image_zoo.ZOO.items())]


def test_images_nvjpeg_cannot_take_give_the_cpu_paths_errors(nvjpeg):
  records = zoo_records()
  decoded, errors, on_device, _ = device_batches.decode_batch(
      records, nvjpeg, CONFIG)
  cpu = [decode_record(r, CONFIG) for r in records]
  want_errors = sorted(r for r in cpu if isinstance(r, ErrorRecord))
  assert sorted(errors) == want_errors
  assert len(want_errors) >= 5
  good = {image.key for image, _ in decoded}
  assert good == {r.key for r in cpu if not isinstance(r, ErrorRecord)}
  # Some went to the GPU, the rest (PNG, CMYK, GIF...) to the CPU path.
  assert 0 < on_device < len(good)
  print(f'zoo: {on_device} decoded on the GPU, {len(good) - on_device} '
        f'on the CPU, {len(errors)} errors')


@pytest.mark.parametrize('value', [3, 6, 8])
def test_exif_orientation_is_applied_on_the_gpu(nvjpeg, value):
  from tests.test_gpu_orientation import rotated_jpeg  # pylint: disable=import-outside-toplevel
  record = ImageRecord(f'turned-{value}', 'test', rotated_jpeg(value))
  decoded, errors, on_device, _ = device_batches.decode_batch(
      [record], nvjpeg, CONFIG)
  assert not errors and on_device == 1
  mean, p99, worst = differences(decoded[0][1].cpu().numpy(),
                                 decode_record(record, CONFIG).pixels)
  print(f'orientation {value}: nvJPEG vs CPU path mean {mean:.3f} max {worst}')
  assert mean <= 1.5
