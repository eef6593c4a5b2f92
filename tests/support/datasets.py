"""Writes test datasets of real photos (and bad inputs) in all formats."""
import os
from typing import Dict, NamedTuple

from pipeline import demo
from tests.support import image_zoo
from transforms.read import tfrecord_framing


class Dataset(NamedTuple):
  """A written dataset and what the pipeline should make of it.

  Attributes:
    root: Folder holding the shards.
    images: key -> encoded bytes, for every image that should give features.
    labels: key -> label, where the input had one.
    errors: key -> expected error_type, for every image that should fail.
  """
  root: str
  images: Dict[str, bytes]
  labels: Dict[str, object]
  errors: Dict[str, str]


def _photos():
  photos = demo.real_photos()
  return {name: demo.encode_jpeg(photos[name]) for name in sorted(photos)}


def write_tfrecord(root: str, photos, ds: Dataset, corrupt: bool) -> None:
  os.makedirs(os.path.join(root, 'tfrecord'), exist_ok=True)
  names = sorted(photos)
  for index, half in enumerate((names[::2], names[1::2])):
    records = []
    for name in half:
      key = f'tfrecord/{name}.jpg'
      label = names.index(name)
      records.append(demo.image_example(demo.Sample(key, photos[name], label)))
      ds.images[key], ds.labels[key] = photos[name], label
    path = os.path.join(root, 'tfrecord', f'part-{index:05d}-of-00002.tfrecord')
    data = b''.join(tfrecord_framing.encode_record(r) for r in records)
    if corrupt and index == 1:
      bad = bytearray(tfrecord_framing.encode_record(demo.image_example(
          demo.Sample('tfrecord/corrupt.jpg', photos[names[0]], 99))))
      bad[200] ^= 0xFF  # payload byte: the data checksum no longer matches
      data += bytes(bad)
      ds.errors[f'{path}:{len(records)}'] = 'corrupt_record'
    with open(path, 'wb') as f:
      f.write(data)


def write_webdataset(root: str, photos, ds: Dataset, truncated: bool) -> None:
  os.makedirs(os.path.join(root, 'webdataset'), exist_ok=True)
  names = sorted(photos)
  samples = []
  for name in names:
    key = f'webdataset/{name}'
    samples.append(demo.Sample(key, photos[name], names.index(name)))
    ds.images[key], ds.labels[key] = photos[name], names.index(name)
  demo.write_webdataset_shard(
      os.path.join(root, 'webdataset', 'shard-00000.tar'), samples)
  if truncated:
    path = os.path.join(root, 'webdataset', 'shard-00001.tar')
    cut_samples = [demo.Sample(f'cut/{n}', photos[n], 7) for n in names[:3]]
    demo.write_webdataset_shard(path, cut_samples)
    with open(path, 'rb') as f:
      data = f.read()
    with open(path, 'wb') as f:  # cut inside the third sample's image
      f.write(data[:data.index(b'cut/' + names[2].encode()) + 512 + 1000])
    for sample in cut_samples[:2]:
      ds.images[sample.key], ds.labels[sample.key] = sample.data, 7
    ds.errors[cut_samples[2].key] = 'truncated_tar'


def write_files(root: str, photos, ds: Dataset, zoo: bool) -> None:
  os.makedirs(os.path.join(root, 'files'), exist_ok=True)
  items = {f'{name}.jpg': data for name, data in photos.items()}
  if zoo:
    for name, (maker, error) in image_zoo.ZOO.items():
      items[f'zoo/{name}'] = maker()
      if error:
        ds.errors[f'files/zoo/{name}'] = error
  if zoo:
    # A gzip header over garbage: the stream breaks as soon as it is read.
    items['zoo/broken.tar.gz'] = b'\x1f\x8b\x08\x00' + b'\x00' * 6 + (
        b'not deflate data' * 64)
    ds.errors[os.path.join(root, 'files', 'zoo', 'broken.tar.gz') + ':0'] = (
        'unreadable_shard')
  for name, data in items.items():
    path = os.path.join(root, 'files', name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(data)
    if f'files/{name}' not in ds.errors and not name.endswith('.gz'):
      ds.images[f'files/{name}'] = data


def write_dataset(root: str, formats=('tfrecord', 'webdataset', 'files'),
                  bad: bool = True) -> Dataset:
  """Writes the real photos in each format, with bad inputs if ``bad``."""
  photos = _photos()
  ds = Dataset(root, {}, {}, {})
  if 'tfrecord' in formats:
    write_tfrecord(root, photos, ds, corrupt=bad)
  if 'webdataset' in formats:
    write_webdataset(root, photos, ds, truncated=bad)
  if 'files' in formats:
    write_files(root, photos, ds, zoo=bad)
  return ds
