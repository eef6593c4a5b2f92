"""Pure readers: one shard stream in, one ``ImageRecord`` or ``ErrorRecord``
per image out, streamed (never a whole shard in memory).

Tested without Beam. The Beam side (``image_shards.py``) only opens the
stream and routes the results.
"""
import posixpath
import tarfile
from typing import BinaryIO, Iterator, Optional

from transforms.read import example_proto, tfrecord_framing
from transforms.records import ErrorRecord, ImageRecord, Label, ReadResult

SHARD_FORMATS = ('tfrecord', 'webdataset', 'files')

IMAGE_EXTENSIONS = ('jpg', 'jpeg', 'png', 'webp', 'gif', 'bmp', 'tif',
                    'tiff', 'ppm', 'pgm', 'pnm')


def sniff_shard_format(head: bytes) -> str:
  """Guesses a shard's format from its first bytes (512 are enough).

  A POSIX/GNU tar has ``ustar`` at offset 257; a TFRecord starts with a
  length header whose checksum matches. Anything else is taken to be one
  image file (whose own decoding then says what is wrong with it).
  """
  if len(head) >= 262 and head[257:262] == b'ustar':
    return 'webdataset'
  if tfrecord_framing.looks_like_tfrecord(head):
    return 'tfrecord'
  return 'files'


def _error(key: str, source: str, error_type: str, message: str) -> ErrorRecord:
  return ErrorRecord(key=key, source=source, stage='read',
                     error_type=error_type, message=message)


# --------------------------------------------------------------------------
# TFRecord shards of tf.train.Example.


def _parse_example(data: bytes):
  # Looked up here: TensorFlow is heavy, and only TFRecord input needs it
  # at read time. CPU workers have it loaded for the model anyway.
  example = example_proto.example_pb2().Example()
  example.ParseFromString(data)
  return example.features.feature


def _feature_bytes(feature) -> Optional[bytes]:
  values = feature.bytes_list.value
  return bytes(values[0]) if values else None


def _feature_label(feature) -> Label:
  if feature.int64_list.value:
    return int(feature.int64_list.value[0])
  if feature.bytes_list.value:
    return bytes(feature.bytes_list.value[0])
  if feature.float_list.value:
    return str(feature.float_list.value[0]).encode()
  return None


def iter_tfrecord_images(stream: BinaryIO, source: str, *, image_feature: str,
                         key_feature: str, label_feature: str,
                         max_record_bytes: int) -> Iterator[ReadResult]:
  """Reads ``tf.train.Example`` records holding encoded images.

  Args:
    stream: The shard, opened for binary reading.
    source: Shard path, for keys and error lines.
    image_feature: Feature with the encoded image (``image/encoded``).
    key_feature: Feature naming the image (``image/filename``); when absent
      the key is ``<shard>:<index>``.
    label_feature: Feature passed through as the label, when present.
    max_record_bytes: Largest record accepted.

  Yields:
    One ``ImageRecord`` or ``ErrorRecord`` per record.
  """
  for record in tfrecord_framing.iter_records(stream, max_record_bytes):
    fallback_key = f'{source}:{record.index}'
    if record.data is None:
      # iter_records gives every record without data an error_type.
      assert record.error_type is not None
      yield _error(fallback_key, source, record.error_type, record.message)
      continue
    try:
      features = _parse_example(record.data)
    except Exception as e:  # protobuf DecodeError and friends.
      yield _error(fallback_key, source, 'bad_example',
                   f'record {record.index} is not a tf.train.Example: {e}')
      continue
    key = fallback_key
    if key_feature in features:
      name = _feature_bytes(features[key_feature])
      if name:
        key = name.decode('utf-8', errors='replace')
    if image_feature not in features:
      yield _error(key, source, 'missing_image',
                   f'record {record.index} has no feature {image_feature!r}')
      continue
    data = _feature_bytes(features[image_feature]) or b''
    label = (_feature_label(features[label_feature])
             if label_feature in features else None)
    yield ImageRecord(key=key, source=source, data=data, label=label)


# --------------------------------------------------------------------------
# WebDataset tar shards.


def _split_member_name(name: str):
  """WebDataset convention: key up to the first dot of the base name."""
  directory, base = posixpath.split(name)
  stem, dot, extension = base.partition('.')
  key = posixpath.join(directory, stem) if directory else stem
  return key, extension.lower() if dot else ''


def _sample_to_result(key: str, parts: dict, source: str) -> ReadResult:
  # Exact extensions first (``jpg``), then multi-part ones (``left.jpg``).
  image_extension = next((e for e in IMAGE_EXTENSIONS if e in parts), None)
  if image_extension is None:
    image_extension = next(
        (e for e in sorted(parts) if e.rsplit('.', 1)[-1] in IMAGE_EXTENSIONS),
        None)
  if image_extension is None:
    return _error(key, source, 'missing_image',
                  f'sample has no image member (members: {sorted(parts)})')
  label: Label = None
  if 'cls' in parts:
    text = parts['cls'].decode('utf-8', errors='replace').strip()
    try:
      label = int(text)
    except ValueError:
      label = parts['cls']
  elif 'json' in parts:
    label = parts['json']
  return ImageRecord(key=key, source=source, data=parts[image_extension],
                     label=label)


class _CorruptTarHeader(tarfile.ReadError):
  """A member header that fails its checksum or is cut off."""


class _StrictTarInfo(tarfile.TarInfo):
  """Makes a corrupt or cut member header an error, not the end.

  After the first member, tarfile takes a header that fails its checksum
  (or a partial one at the end of the stream) for the end of the archive:
  every sample after it would vanish without an error line. Blocks of zeros
  (the end-of-archive marker, its padding) still end the archive.
  """

  @classmethod
  def frombuf(cls, buf, encoding, errors):
    try:
      return super().frombuf(buf, encoding, errors)
    except tarfile.HeaderError as e:
      if buf.strip(b'\0'):
        raise _CorruptTarHeader(f'corrupt member header: {e}') from e
      raise


class _NoReadPastEnd:
  """A stream whose reads fail once it has returned its end.

  To skip a member it does not extract, tarfile's stream mode reads the
  declared size in 10 KB blocks, on past the end of the stream: a header
  declaring 2^80 bytes (a base-256 size field) would loop for ever. A tar
  is read to its end at most once, so a second read there means a size
  that the shard does not hold.
  """

  def __init__(self, stream: BinaryIO):
    self._stream = stream
    self._ended = False

  def read(self, size: int = -1) -> bytes:
    if self._ended:
      raise tarfile.ReadError('unexpected end of data')
    data = self._stream.read(size)
    if size != 0 and not data:
      self._ended = True
    return data


# What reading a damaged tar raises: tarfile's own errors, the stream's, and
# the ValueError of tarfile's int() parsing of pax and GNU sparse headers
# (``GNU.sparse.map=0,x``), which it does not wrap in a TarError.
_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError)


def iter_webdataset_images(stream: BinaryIO, source: str, *,
                           max_member_bytes: int) -> Iterator[ReadResult]:
  """Reads a WebDataset tar shard member by member.

  Members of one sample (``<key>.jpg``, ``<key>.cls``, ``<key>.json``, ...)
  are consecutive, as WebDataset writes them; a sample is emitted as soon as
  the next key starts, so only one sample is held at a time. The image is
  the first member with an image extension; ``.cls`` (an integer) or else
  ``.json`` (bytes) passes through as the label.

  Args:
    stream: The tar shard, opened for binary reading (not seekable is fine).
    source: Shard path, for error lines.
    max_member_bytes: Largest member read into memory.

  Yields:
    One ``ImageRecord`` or ``ErrorRecord`` per sample.
  """
  key: Optional[str] = None
  parts: dict = {}
  failure: Optional[ErrorRecord] = None
  complete = 0
  try:
    # The stub wants a seekable, writable file object for every mode; the
    # stream mode ('r|') only reads.
    archive = tarfile.open(  # type: ignore[call-overload]
        fileobj=_NoReadPastEnd(stream), mode='r|*', tarinfo=_StrictTarInfo)
  except _TAR_ERRORS as e:
    yield _error(f'{source}:0', source, 'bad_tar', f'not a readable tar: {e}')
    return
  try:
    for member in archive:
      # Stream mode keeps every header it has read in ``members``; a shard
      # of a million members would hold a million. Past headers are never
      # needed again (iteration reads the next one when the list is
      # exhausted), so memory stays at one member's.
      archive.members.clear()
      if not member.isfile():
        continue
      member_key, extension = _split_member_name(member.name)
      if member_key != key:
        if key is not None:
          yield failure or _sample_to_result(key, parts, source)
          complete += 1
        key, parts, failure = member_key, {}, None
      assert key is not None  # member_key, set just above when it differed
      if failure is not None:
        continue
      if member.size > max_member_bytes:
        failure = _error(key, source, 'member_too_large',
                         f'{member.name} is {member.size} bytes, over the '
                         f'limit of {max_member_bytes}')
        continue
      handle = archive.extractfile(member)
      parts[extension] = handle.read() if handle else b''
  except _TAR_ERRORS as e:
    yield _error(key or f'{source}:{complete}', source, 'truncated_tar',
                 f'tar shard is truncated or corrupt after {complete} '
                 f'complete samples: {e}')
    return
  if key is not None:
    yield failure or _sample_to_result(key, parts, source)


# --------------------------------------------------------------------------
# Plain image files.


def read_image_file(stream: BinaryIO, source: str, key: str, *,
                    max_file_bytes: int) -> ReadResult:
  """Reads one plain image file (one image) into an ``ImageRecord``."""
  data = stream.read(max_file_bytes + 1)
  if len(data) > max_file_bytes:
    return _error(key, source, 'file_too_large',
                  f'file is larger than the limit of {max_file_bytes} bytes')
  return ImageRecord(key=key, source=source, data=data)

