"""A profile's dataset written as TFRecord or WebDataset shards
(``write_profile``), cached by its arguments."""
import dataclasses
import functools
import io
import json
import mmap
import os
import tarfile
from typing import Iterable, List, NamedTuple, Optional, Tuple, Union

import numpy as np
import PIL

from benchmarks.gpu.profiles.draws import (
    Profile, SHARD_EXTENSIONS, SHARD_FORMATS, draw_plans, get_profile)
from benchmarks.gpu.profiles.encoding import process_pool, encode_all
from benchmarks.gpu.profiles.facts import describe
from transforms.write import example_codec

# Bump when a change here changes the images or shards written for the same
# arguments: shards cached by an earlier version are then rewritten.
GENERATOR_VERSION = 1


class _Member(NamedTuple):
  """One image in a shard: its key (with no extension), bytes, label."""
  key: str
  extension: str
  data: bytes
  label: int


class _ShardTask(NamedTuple):
  """One shard to write: images ``first`` .. ``first + count - 1``.

  Attributes:
    path: The shard's path (written as ``path.partial``, then renamed).
    shard_format: ``tfrecord`` or ``webdataset``.
    blob: File holding the distinct images one after the other.
    spans: Offset and length of each distinct image in ``blob``.
    extensions: Each distinct image's file extension.
    name: The profile's name, which starts every key.
    first: Index of the shard's first image.
    count: Images in the shard.
  """
  path: str
  shard_format: str
  blob: str
  spans: Tuple[Tuple[int, int], ...]
  extensions: Tuple[str, ...]
  name: str
  first: int
  count: int


@functools.lru_cache(maxsize=1)
def _mapped(path: str) -> mmap.mmap:
  # Mapped, not read: the workers share one copy in the page cache.
  with open(path, 'rb') as f:
    return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _write_shard(task: _ShardTask) -> None:
  blob = _mapped(task.blob)
  distinct = len(task.spans)

  def member(i: int) -> _Member:
    offset, length = task.spans[i % distinct]
    return _Member(f'{task.name}-{i:07d}', task.extensions[i % distinct],
                   blob[offset:offset + length], i % 1000)

  _SHARD_WRITERS[task.shard_format](task.path + '.partial', (
      member(i) for i in range(task.first, task.first + task.count)))
  os.replace(task.path + '.partial', task.path)


def _tfrecord_framing():
  """featurize's TFRecord framing, imported only for TFRecord shards.

  Raises:
    ImportError: when ``google_crc32c`` (its checksum) is missing, as on a
      bare GPU machine; WebDataset shards do without it.
  """
  try:
    # pylint: disable-next=import-outside-toplevel
    from transforms.read import tfrecord_framing
  except ImportError as e:
    raise ImportError(f'TFRecord shards need google_crc32c ({e}): install '
                      'it or write shard_format="webdataset"') from e
  return tfrecord_framing


def _write_tfrecord(path: str, members: Iterable[_Member]) -> None:
  tfrecord_framing = _tfrecord_framing()
  with open(path, 'wb') as f:
    for m in members:
      f.write(tfrecord_framing.encode_record(
          example_codec.encode_image_example(f'{m.key}.{m.extension}', m.data,
                                          m.label)))


def _write_webdataset(path: str, members: Iterable[_Member]) -> None:
  # demo.write_webdataset_shard gives every image one extension; here each
  # keeps its own (``.png``, ``.webp``). TarInfo's defaults (mtime 0, root)
  # keep the bytes the same from run to run.
  with tarfile.open(path, 'w') as tar:
    for m in members:
      for name, data in ((f'{m.key}.{m.extension}', m.data),
                         (f'{m.key}.cls', str(m.label).encode())):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


_SHARD_WRITERS = {'tfrecord': _write_tfrecord,
                  'webdataset': _write_webdataset}


class ProfileData(NamedTuple):
  """A dataset written by ``write_profile``.

  Attributes:
    paths: The shards, in order.
    pattern: Glob of exactly these shards, for featurize's ``--input``.
    shard_format: ``tfrecord`` or ``webdataset``.
    stats: ``describe``'s statistics of the images in the shards.
  """
  paths: List[str]
  pattern: str
  shard_format: str
  stats: dict


def _repeats(distinct: int, images: int) -> List[int]:
  """How often each distinct image occurs: image ``i`` is ``i % distinct``."""
  used = min(distinct, images)
  return [images // distinct + (j < images % distinct) for j in range(used)]


def write_profile(profile: Union[str, Profile], folder: str, images: int,
                  per_shard: int = 1000, distinct: int = 2048, seed: int = 0,
                  shard_format: Optional[str] = None,
                  processes: Optional[int] = None) -> ProfileData:
  """Writes ``images`` images of a profile as shards in ``folder``.

  ``distinct`` images are drawn and encoded; image ``i`` (key
  ``<profile>-<i:07d>``, label ``i % 1000``) is distinct image
  ``i % distinct``. Shards are named after every argument that changes
  their bytes, so datasets of different arguments live side by side in one
  folder. A dataset already written with the same arguments (its sidecar
  ``.json`` matches and every shard is there) is reused as it is; files are
  written as ``*.partial`` and renamed, so an interrupted run leaves no
  shard that looks complete.

  Args:
    profile: A name in ``PROFILES``, or a ``Profile``.
    folder: Where the shards go (created if missing).
    images: Images in the dataset.
    per_shard: Images per shard.
    distinct: Distinct images drawn.
    seed: Seed of the draws; the same seed gives the same bytes.
    shard_format: ``tfrecord`` (``image/encoded``, ``image/filename``,
      ``image/class/label``, as TFDS writes ImageNet) or ``webdataset``
      (``<key>.<ext>`` and ``<key>.cls`` tar members); None for the
      profile's own.
    processes: Processes that encode and write (None: ``os.cpu_count()``;
      1: this one alone). The bytes do not depend on it.

  Returns:
    The shards, their glob pattern, format and statistics.

  Raises:
    ValueError: for an unknown profile or format, or counts below 1.
    ImportError: for TFRecord shards without ``google_crc32c``.
  """
  profile = get_profile(profile)
  shard_format = shard_format or profile.shard_format
  if shard_format not in SHARD_FORMATS:
    raise ValueError(f'shard_format must be one of {SHARD_FORMATS}, '
                     f'not {shard_format!r}')
  if min(images, per_shard, distinct) < 1:
    raise ValueError('images, per_shard and distinct must be at least 1')
  if shard_format == 'tfrecord':
    _tfrecord_framing()  # Fails before the encoding, not after.
  os.makedirs(folder, exist_ok=True)
  shards = (images + per_shard - 1) // per_shard
  extension = SHARD_EXTENSIONS[shard_format]
  stem = f'{profile.name}-s{seed}-d{distinct}-n{images}'
  paths = [os.path.join(folder, f'{stem}-{n:05d}-of-{shards:05d}.{extension}')
           for n in range(shards)]
  pattern = os.path.join(folder, f'{stem}-*-of-{shards:05d}.{extension}')
  sidecar = os.path.join(folder, f'{stem}-of-{shards:05d}.{extension}.json')
  # Everything else that changes the bytes: a changed profile or encoder
  # must not be mistaken for the cached one.
  config = json.loads(json.dumps({
      'generator_version': GENERATOR_VERSION,
      'profile': dataclasses.asdict(profile), 'seed': seed,
      'distinct': distinct, 'images': images, 'per_shard': per_shard,
      'shard_format': shard_format, 'pillow': PIL.__version__,
      'numpy': np.__version__}))
  cached = _read_sidecar(sidecar)
  if (cached is not None and cached.get('config') == config
      and all(os.path.exists(p) for p in paths)):
    return ProfileData(paths, pattern, shard_format, cached['stats'])

  repeats = _repeats(distinct, images)
  plans = draw_plans(profile, distinct, seed)[:len(repeats)]
  # The shards are written in parallel too (100,000 web images are 10 GB):
  # the workers take the distinct images from one file that they map.
  blob = os.path.join(folder, f'.{stem}.distinct.partial')
  with process_pool(processes, max(len(plans), shards)) as pool:
    encoded = encode_all(plans, pool)
    with open(blob, 'wb') as f:
      f.write(b''.join(encoded))
    try:
      spans, offset = [], 0
      for data in encoded:
        spans.append((offset, len(data)))
        offset += len(data)
      tasks = [_ShardTask(path, shard_format, blob, tuple(spans),
                          tuple(p.extension for p in plans), profile.name,
                          n * per_shard, min(per_shard, images - n * per_shard))
               for n, path in enumerate(paths)]
      if pool is None:
        for task in tasks:
          _write_shard(task)
      else:
        pool.map(_write_shard, tasks, chunksize=1)
    finally:
      _mapped.cache_clear()
      os.remove(blob)
  stats = describe(encoded, repeats)
  with open(sidecar + '.partial', 'w') as f:
    json.dump({'config': config, 'stats': stats}, f, indent=1)
  os.replace(sidecar + '.partial', sidecar)
  return ProfileData(paths, pattern, shard_format, stats)


def _read_sidecar(path: str) -> Optional[dict]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None
