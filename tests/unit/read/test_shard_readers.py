"""Pure shard reader tests: TFRecord framing, WebDataset tars, sniffing."""
import io
import struct

import pytest

from pipeline import demo
from tests.support import image_zoo
from transforms.read import shard_readers, tfrecord_framing
from transforms.read.image_shards import file_key, pattern_base
from transforms.records import ErrorRecord, ImageRecord

OPTIONS = dict(image_feature='image/encoded', key_feature='image/filename',
               label_feature='image/class/label', max_record_bytes=1 << 24)


def _tfrecord_bytes(samples) -> bytes:
  return b''.join(
      tfrecord_framing.encode_record(demo.image_example(s)) for s in samples)


def _samples(n=3, suffix='.jpg'):
  return [demo.Sample(f'img{i}{suffix}', image_zoo.jpeg(size=(64 + i, 48)), i)
          for i in range(n)]


def test_framing_round_trip_and_matches_tensorflow():
  import tensorflow as tf
  records = [b'', b'a', b'hello' * 1000]
  data = b''.join(tfrecord_framing.encode_record(r) for r in records)
  read = [r.data for r in tfrecord_framing.iter_records(io.BytesIO(data),
                                                        1 << 20)]
  assert read == records
  # The writer's framing is TensorFlow's: tf.data reads it back.
  path = '/tmp/featurize-framing-test.tfrecord'
  with open(path, 'wb') as f:
    f.write(data)
  assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == records


def test_tfrecord_images_keys_and_labels():
  results = list(shard_readers.iter_tfrecord_images(
      io.BytesIO(_tfrecord_bytes(_samples())), 'shard', **OPTIONS))
  assert [r.key for r in results] == ['img0.jpg', 'img1.jpg', 'img2.jpg']
  assert [r.label for r in results] == [0, 1, 2]
  assert all(isinstance(r, ImageRecord) for r in results)
  assert results[1].data == _samples()[1].data


def test_tfrecord_without_filename_keys_by_shard_and_index():
  from tensorflow.core.example import example_pb2
  example = example_pb2.Example()
  example.features.feature['image/encoded'].bytes_list.value.append(b'x')
  data = tfrecord_framing.encode_record(example.SerializeToString()) * 2
  results = list(shard_readers.iter_tfrecord_images(
      io.BytesIO(data), 'gs://b/s.tfrecord', **OPTIONS))
  assert [r.key for r in results] == ['gs://b/s.tfrecord:0',
                                      'gs://b/s.tfrecord:1']
  assert results[0].label is None


def test_corrupt_record_is_one_error_and_the_rest_is_read():
  data = bytearray(_tfrecord_bytes(_samples()))
  first_length, = struct.unpack('<Q', data[:8])
  second = 12 + first_length + 4
  data[second + 12 + 100] ^= 0xFF  # flip a byte in record 1's payload
  results = list(shard_readers.iter_tfrecord_images(io.BytesIO(bytes(data)),
                                                    'shard', **OPTIONS))
  assert len(results) == 3
  assert isinstance(results[1], ErrorRecord)
  assert results[1].error_type == 'corrupt_record'
  assert results[1].key == 'shard:1'
  assert [r.key for r in results if isinstance(r, ImageRecord)] == [
      'img0.jpg', 'img2.jpg']


def test_truncated_tfrecord_reports_the_cut_record():
  data = _tfrecord_bytes(_samples())
  results = list(shard_readers.iter_tfrecord_images(
      io.BytesIO(data[:-30]), 'shard', **OPTIONS))
  assert [type(r).__name__ for r in results] == ['ImageRecord', 'ImageRecord',
                                                 'ErrorRecord']
  assert results[2].error_type == 'truncated_record'


def test_record_that_is_not_an_example_is_an_error():
  data = tfrecord_framing.encode_record(b'\xff\xff\xff not a proto')
  results = list(shard_readers.iter_tfrecord_images(io.BytesIO(data), 's',
                                                    **OPTIONS))
  assert results[0].error_type == 'bad_example'


def _tar_bytes(samples) -> bytes:
  path = '/tmp/featurize-test.tar'
  demo.write_webdataset_shard(path, samples)
  with open(path, 'rb') as f:
    return f.read()


def test_webdataset_samples_with_labels():
  results = list(shard_readers.iter_webdataset_images(
      io.BytesIO(_tar_bytes(_samples(suffix=''))), 't.tar',
      max_member_bytes=1 << 24))
  assert [(r.key, r.label) for r in results] == [
      ('img0', 0), ('img1', 1), ('img2', 2)]
  assert results[2].data == _samples()[2].data


def test_webdataset_json_passes_through_and_missing_image_is_an_error():
  import tarfile
  out = io.BytesIO()
  with tarfile.open(fileobj=out, mode='w') as tar:
    for name, data in (('a.png', image_zoo.one_by_one()),
                       ('a.json', b'{"caption": "red"}'),
                       ('b.txt', b'no image here')):
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  results = list(shard_readers.iter_webdataset_images(
      io.BytesIO(out.getvalue()), 't.tar', max_member_bytes=1 << 24))
  assert results[0].key == 'a' and results[0].label == b'{"caption": "red"}'
  assert results[1].key == 'b' and results[1].error_type == 'missing_image'


def test_truncated_tar_keeps_complete_samples_and_reports_the_cut():
  data = _tar_bytes(_samples(4, suffix=''))
  # Cut 600 bytes into the image data of the last sample.
  cut = data[:data.index(b'img3.jpg') + 512 + 600]
  results = list(shard_readers.iter_webdataset_images(
      io.BytesIO(cut), 't.tar', max_member_bytes=1 << 24))
  assert [(r.key, type(r).__name__) for r in results] == [
      ('img0', 'ImageRecord'), ('img1', 'ImageRecord'),
      ('img2', 'ImageRecord'), ('img3', 'ErrorRecord')]
  assert results[3].error_type == 'truncated_tar'


def test_oversized_member_is_one_error():
  results = list(shard_readers.iter_webdataset_images(
      io.BytesIO(_tar_bytes(_samples(2, suffix=''))), 't.tar',
      max_member_bytes=100))
  assert [r.error_type for r in results] == ['member_too_large'] * 2


@pytest.mark.parametrize('maker, expected', [
    (lambda: _tar_bytes(_samples(1)), 'webdataset'),
    (lambda: _tfrecord_bytes(_samples(1)), 'tfrecord'),
    (image_zoo.jpeg, 'files'),
    (lambda: b'', 'files'),
])
def test_shard_format_is_sniffed_from_content(maker, expected):
  assert shard_readers.sniff_shard_format(maker()[:512]) == expected


def test_file_keys_are_relative_to_the_pattern_base():
  assert pattern_base('/data/photos/**/*.jpg') == '/data/photos/'
  assert file_key('/data/photos/cats/1.jpg', '/data/photos/**/*.jpg') == (
      'cats/1.jpg')
  assert file_key('gs://b/x/a.png', 'gs://b/x/*.png') == 'a.png'
  assert file_key('/data/a.jpg', '/data/a.jpg') == 'a.jpg'


def test_a_tar_of_many_members_holds_no_list_of_them(monkeypatch):
  """tarfile's stream mode appends every header to ``members``; the reader
  clears it, so a shard's member count does not grow memory."""
  import io
  import tarfile as tarfile_module
  from tests.support import image_zoo
  from transforms.read import shard_readers
  data = io.BytesIO()
  with tarfile_module.open(fileobj=data, mode='w') as tar:
    for index in range(300):
      payload = image_zoo.jpeg(size=(8, 8)) if index % 3 == 0 else b'1'
      info = tarfile_module.TarInfo(
          f'sample{index // 3:04d}.{"jpg" if index % 3 == 0 else "cls"}')
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))
  seen = []
  original = tarfile_module.TarFile.next

  def next_member(self):
    seen.append(len(self.members))
    return original(self)
  monkeypatch.setattr(tarfile_module.TarFile, 'next', next_member)
  data.seek(0)
  results = list(shard_readers.iter_webdataset_images(
      data, 'many.tar', max_member_bytes=1 << 20))
  assert len(results) == 100 and len(seen) > 100
  assert max(seen) <= 1  # never more than the member just read
