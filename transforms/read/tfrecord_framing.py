"""TFRecord framing: read record by record with per-record errors; write.

Why our own and not ``beam.io.ReadFromTFRecord``: Beam's reader raises on
the first corrupt record and so fails the whole shard (and the run), while
we owe every image its own outcome. A corrupt record must become one error
line and the rest of the shard must still be read. The framing itself is
tiny (length, masked CRC32C of the length, data, masked CRC32C of the data);
the checksum comes from ``google_crc32c``.
"""
import struct
from typing import BinaryIO, Iterator, NamedTuple, Optional

import google_crc32c

_HEADER_BYTES = 12
_FOOTER_BYTES = 4


def masked_crc32c(data: bytes) -> int:
  """The masked CRC32C that TFRecord stores after length and data."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xa282ead8) & 0xffffffff


def encode_record(data: bytes) -> bytes:
  """Frames ``data`` as one TFRecord record."""
  length = struct.pack('<Q', len(data))
  return b''.join((
      length,
      struct.pack('<I', masked_crc32c(length)),
      data,
      struct.pack('<I', masked_crc32c(data)),
  ))


def looks_like_tfrecord(head: bytes) -> bool:
  """True when ``head`` starts with a valid TFRecord length header."""
  if len(head) < _HEADER_BYTES:
    return False
  length_crc, = struct.unpack('<I', head[8:12])
  return masked_crc32c(head[:8]) == length_crc


class FramedRecord(NamedTuple):
  """One record, or the reason it could not be read.

  Attributes:
    index: Position of the record in the shard, from 0.
    data: Payload, or None when the record is unusable.
    error_type: None, or why the record is unusable.
    message: Details of the error.
    fatal: True when the rest of the shard cannot be read either.
  """
  # Shadows tuple.index; renaming the field would change the public type.
  index: int  # type: ignore[assignment]
  data: Optional[bytes]
  error_type: Optional[str] = None
  message: str = ''
  fatal: bool = False


def _read_exact(stream: BinaryIO, size: int) -> bytes:
  """Reads ``size`` bytes, or fewer only at end of stream.

  Some Beam file objects (compressed, remote) return short reads before the
  end; framing needs exact counts.
  """
  chunks = []
  remaining = size
  while remaining > 0:
    chunk = stream.read(remaining)
    if not chunk:
      break
    chunks.append(chunk)
    remaining -= len(chunk)
  return b''.join(chunks)


def iter_records(stream: BinaryIO,
                 max_record_bytes: int) -> Iterator[FramedRecord]:
  """Yields the records of a TFRecord stream one at a time.

  Only one record is held in memory at a time. A record whose data checksum
  does not match is reported and skipped; a corrupt length header or a
  truncated record ends the shard, reported as one fatal record.

  Args:
    stream: Binary stream positioned at the start of the shard.
    max_record_bytes: Largest record accepted; a larger length is treated as
      corruption rather than allocated.

  Yields:
    One ``FramedRecord`` per record.
  """
  index = 0
  while True:
    header = _read_exact(stream, _HEADER_BYTES)
    if not header:
      return
    if len(header) < _HEADER_BYTES:
      yield FramedRecord(index, None, 'truncated_record',
                         f'shard ends inside the header of record {index}',
                         fatal=True)
      return
    length_bytes = header[:8]
    length_crc, = struct.unpack('<I', header[8:])
    if masked_crc32c(length_bytes) != length_crc:
      yield FramedRecord(index, None, 'corrupt_record',
                         f'length checksum mismatch at record {index}; '
                         'the rest of the shard cannot be framed',
                         fatal=True)
      return
    length, = struct.unpack('<Q', length_bytes)
    if length > max_record_bytes:
      yield FramedRecord(index, None, 'record_too_large',
                         f'record {index} claims {length} bytes, more than '
                         f'the limit of {max_record_bytes}', fatal=True)
      return
    data = _read_exact(stream, length)
    footer = _read_exact(stream, _FOOTER_BYTES)
    if len(data) < length or len(footer) < _FOOTER_BYTES:
      yield FramedRecord(index, None, 'truncated_record',
                         f'shard ends inside record {index}', fatal=True)
      return
    data_crc, = struct.unpack('<I', footer)
    if masked_crc32c(data) != data_crc:
      yield FramedRecord(index, None, 'corrupt_record',
                         f'data checksum mismatch in record {index}')
    else:
      yield FramedRecord(index, data)
    index += 1
