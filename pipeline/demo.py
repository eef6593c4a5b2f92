"""The bundled demo dataset: real photos in all three input formats.

The photos come from scikit-image's wheel (astronaut, cat, coffee, rocket,
...), so the demo needs no download. The writers here are also what the
tests use to make their shards.
"""
import argparse
import datetime
import io
import os
import tarfile
from typing import Dict, Iterable, List, NamedTuple, Optional

from PIL import Image

from transforms.read import example_proto, tfrecord_framing

LOCAL_CONFIG = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'run_configs', 'local.yaml')
DEMO_DIR = 'featurize-demo'

# scikit-image data files that are colour or grey photographs.
PHOTO_FILES = ('astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg',
               'motorcycle_left.png', 'hubble_deep_field.jpg', 'retina.jpg',
               'camera.png')


class Sample(NamedTuple):
  """One image to put in a shard."""
  key: str
  data: bytes
  label: Optional[int] = None


def photo_dir() -> str:
  import skimage.data
  return os.path.dirname(skimage.data.__file__)


def real_photos() -> Dict[str, Image.Image]:
  """The demo photos as Pillow images, by name (without extension)."""
  photos = {}
  for name in PHOTO_FILES:
    with Image.open(os.path.join(photo_dir(), name)) as image:
      photos[name.split('.')[0]] = image.copy()
  return photos


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
  out = io.BytesIO()
  image.convert('RGB' if image.mode not in ('L', 'RGB') else image.mode).save(
      out, 'JPEG', quality=quality)
  return out.getvalue()


def image_example(sample: Sample) -> bytes:
  """A TFDS/ImageNet-style ``tf.train.Example`` of one image."""
  example = example_proto.example_pb2().Example()
  feature = example.features.feature
  feature['image/encoded'].bytes_list.value.append(sample.data)
  feature['image/filename'].bytes_list.value.append(sample.key.encode())
  if sample.label is not None:
    feature['image/class/label'].int64_list.value.append(sample.label)
  return example.SerializeToString()


def write_tfrecord_shard(path: str, records: Iterable[bytes]) -> None:
  """Writes already-serialised records as one TFRecord shard."""
  with open(path, 'wb') as f:
    for record in records:
      f.write(tfrecord_framing.encode_record(record))


def write_webdataset_shard(path: str, samples: Iterable[Sample],
                           image_extension: str = 'jpg') -> None:
  """Writes samples as ``<key>.<ext>`` (+ ``<key>.cls``) tar members."""
  with tarfile.open(path, 'w') as tar:
    for sample in samples:
      members = [(f'{sample.key}.{image_extension}', sample.data)]
      if sample.label is not None:
        members.append((f'{sample.key}.cls', str(sample.label).encode()))
      for name, data in members:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def write_demo_dataset(root: str) -> List[str]:
  """Writes the demo photos as TFRecord, WebDataset and plain files.

  Keys differ per format (``tfrecord/astronaut.jpg``,
  ``webdataset/astronaut``, ``files/astronaut.jpg``) so that one run over
  ``root/**`` reads all three.

  Returns:
    The paths written.
  """
  photos = real_photos()
  names = sorted(photos)
  jpegs = {name: encode_jpeg(photos[name]) for name in names}
  written = []
  for sub in ('tfrecord', 'webdataset', 'files'):
    os.makedirs(os.path.join(root, sub), exist_ok=True)
  halves = (names[::2], names[1::2])
  for index, half in enumerate(halves):
    path = os.path.join(root, 'tfrecord',
                        f'photos-{index:05d}-of-{len(halves):05d}.tfrecord')
    write_tfrecord_shard(path, (image_example(
        Sample(f'tfrecord/{name}.jpg', jpegs[name], names.index(name)))
                                for name in half))
    written.append(path)
  path = os.path.join(root, 'webdataset', 'photos-00000.tar')
  write_webdataset_shard(path, (Sample(f'webdataset/{name}', jpegs[name],
                                       names.index(name)) for name in names))
  written.append(path)
  for name in names:
    path = os.path.join(root, 'files', f'{name}.jpg')
    with open(path, 'wb') as f:
      f.write(jpegs[name])
    written.append(path)
  return written


def fill_in(flags: argparse.Namespace) -> None:
  """Gives ``featurize demo``'s parsed flags their defaults: the demo
  dataset as ``input`` (written the first time) and a new folder as
  ``output``, where the command line names none."""
  if flags.input is None:
    root = os.path.join(DEMO_DIR, 'input')
    if not os.path.isdir(root):
      write_demo_dataset(root)
    flags.input = os.path.join(root, '**')
  if flags.output is None:
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    flags.output = os.path.join(DEMO_DIR, f'run-{stamp}')
