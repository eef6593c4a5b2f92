"""nvJPEG decoding and the ragged resize on the GPU against the CPU
decoder and Pillow's resize rule."""
import numpy as np
import pytest
import torch
from torchvision import io as tv_io

from tests.support import image_zoo
from transforms.decode import imaging
from transforms.decode.decode_images import decode_record
from transforms.extract.gpu import (decoders, device_batches, orientation,
                                    resample)
from transforms.records import ErrorRecord, ImageRecord

CONFIG = imaging.DecodeConfig()


@pytest.fixture(scope='module')
def nvjpeg():
  return decoders.NvjpegDecoder(0, CONFIG, BATCH)


BATCH = 64


def differences(got: np.ndarray, want: np.ndarray):
  diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
  return float(diff.mean()), float(np.percentile(diff, 99)), int(diff.max())


def test_gpu_resize_gives_the_cpu_rules_pixels(nvjpeg, reference):
  """The same decoded pixels in: the ragged resize on the GPU equals
  resample's reference of Pillow's rule (which the CPU tests check against
  Pillow), for the test photos and random pixels of many sizes and every
  orientation in one batch, so any pixel difference left comes from the
  JPEG decoders."""
  rng = np.random.default_rng(7)
  stored = [tv_io.decode_jpeg(torch.frombuffer(bytearray(data),
                                               dtype=torch.uint8),
                              mode=tv_io.ImageReadMode.RGB)
            for data in reference['jpegs'].values()]
  for height, width in ((375, 500), (500, 333), (1, 1), (3000, 40),
                        (57, 1999), (224, 224), (256, 256), (1200, 1600)):
    stored.append(torch.from_numpy(rng.integers(
        0, 256, (3, height, width), dtype=np.uint8)))
  turns = [1 + i % 8 for i in range(len(stored))]
  rows = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)]
  got = np.asarray(nvjpeg.resize_batch(
      [(p.cuda(), t) for p, t in zip(stored, turns)], rows))
  assert got.shape == (BATCH, 224, 224, 3)
  for index, (pixels, turn) in enumerate(zip(stored, turns)):
    upright = np.ascontiguousarray(orientation.apply_numpy(
        pixels.permute(1, 2, 0).numpy(), turn))
    plan = resample.resize_plan(upright.shape[1], upright.shape[0], CONFIG)
    want = resample.apply_plan(upright, plan)
    assert np.array_equal(got[index], want), (index, pixels.shape, turn)
  np.testing.assert_array_equal(got[len(stored)], rows[0])
  assert not got[len(stored) + 1:].any()  # padding rows are zero


def _decode_and_resize(nvjpeg, records):
  batch, errors = device_batches.batch_of(records, CONFIG)
  decoded, rows, fallback_errors, _ = device_batches.decode_on_device(
      batch, nvjpeg, CONFIG)
  pixels = np.asarray(nvjpeg.resize_batch(
      [(p, t) for _, p, t in decoded], [p for _, p in rows]))
  keys = [image.key for image, _, _ in decoded] + [
      image.key for image, _ in rows]
  return ({key: pixels[i] for i, key in enumerate(keys)},
          errors + fallback_errors, len(decoded))


def test_nvjpeg_pixels_are_close_to_the_cpu_decoders(nvjpeg, reference):
  names = list(reference['jpegs'])
  records = [ImageRecord(n, 'ref', reference['jpegs'][n]) for n in names]
  got, errors, on_device = _decode_and_resize(nvjpeg, records)
  assert not errors and on_device == len(names)
  for index, name in enumerate(names):
    assert got[name].shape == (224, 224, 3) and got[name].dtype == np.uint8
    mean, p99, worst = differences(got[name], reference['pixels'][index])
    print(f'{name}: nvJPEG vs CPU path mean {mean:.3f} p99 {p99} max {worst}')
    # The CPU path decodes the 1600x1200 photo at 1/4 size in the DCT;
    # the others differ by the decoders' IDCT and chroma upsampling (an
    # H200 run: means 0.2-0.8, and 1.8 for the grey, high-contrast
    # 'camera'; p99 at most 14).
    assert mean <= 2.5
    assert p99 <= 16
  # One image alone gives what it gives within a batch.
  alone, _, _ = _decode_and_resize(nvjpeg, records[1:2])
  np.testing.assert_array_equal(alone[names[1]], got[names[1]])


def zoo_records():
  return [ImageRecord(name, 'zoo', maker()) for name, (maker, _) in
          sorted(image_zoo.ZOO.items())]


def test_images_nvjpeg_cannot_take_give_the_cpu_paths_errors(nvjpeg):
  records = zoo_records()
  got, errors, on_device = _decode_and_resize(nvjpeg, records)
  cpu = [decode_record(r, CONFIG) for r in records]
  want_errors = sorted(r for r in cpu if isinstance(r, ErrorRecord))
  assert sorted(errors) == want_errors
  assert len(want_errors) >= 5
  assert set(got) == {r.key for r in cpu if not isinstance(r, ErrorRecord)}
  # Some went to the GPU, the rest (PNG, CMYK, GIF...) to the CPU path.
  assert 0 < on_device < len(got)
  print(f'zoo: {on_device} decoded on the GPU, {len(got) - on_device} '
        f'on the CPU, {len(errors)} errors')


@pytest.mark.parametrize('value', [3, 6, 8])
def test_exif_orientation_is_applied_on_the_gpu(nvjpeg, value):
  from tests.support.image_zoo import rotated_jpeg  # pylint: disable=import-outside-toplevel
  record = ImageRecord(f'turned-{value}', 'test', rotated_jpeg(value))
  got, errors, on_device = _decode_and_resize(nvjpeg, [record])
  assert not errors and on_device == 1
  mean, p99, worst = differences(got[record.key],
                                 decode_record(record, CONFIG).pixels)
  print(f'orientation {value}: nvJPEG vs CPU path mean {mean:.3f} max {worst}')
  assert mean <= 1.5


@pytest.mark.parametrize('subsampling', [1, 2])
def test_grayscale_marked_2x1_or_2x2_decodes_on_the_gpu_as_the_cpu_does(
    nvjpeg, subsampling):
  """Pillow writes a grayscale JPEG's one component 2x2 for its default
  4:2:0 (2x1 for 4:2:2), which nvJPEG decodes wrongly; the device is
  given it marked 1x1 (``jpeg_header.device_bytes``) and its pixels are
  the CPU path's, as close as for any JPEG nvJPEG decodes."""
  from tests.support.image_zoo import gray_jpeg  # pylint: disable=import-outside-toplevel
  records = [ImageRecord(f'gray-{size[0]}x{size[1]}', 'test',
                         gray_jpeg(size, subsampling))
             for size in [(500, 375), (375, 500), (53, 37), (257, 255)]]
  got, errors, on_device = _decode_and_resize(nvjpeg, records)
  assert not errors and on_device == len(records)
  for record in records:
    mean, p99, worst = differences(got[record.key],
                                   decode_record(record, CONFIG).pixels)
    print(f'{record.key} marked {subsampling}: nvJPEG vs CPU path mean '
          f'{mean:.3f} p99 {p99} max {worst}')
    # The decoders' IDCTs differ, as for every JPEG (the photos' bound).
    assert mean <= 2.5
