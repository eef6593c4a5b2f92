"""Byte-level mutations, as plain functions of their parameters.

Hypothesis draws the parameters (``strategies.py``); keeping the mutations
themselves pure lets a failure be replayed from its description alone.
"""
import hashlib
import struct
from typing import NamedTuple, Tuple

from tests.support.fuzz import fields
from transforms.read import tfrecord_framing

# Values that break size arithmetic: zero, one, powers of two and their
# neighbours, the largest signed and unsigned values of each width.
INTERESTING = (0, 1, 2, 7, 8, 0x7f, 0x80, 0xff, 0x100, 0x3fff, 0x4000,
               0x7fff, 0x8000, 0xffff, 0x10000, 30000, 46341, 0xffffff,
               0x7fffffff, 0x80000000, 0xffffffff, 1 << 32, (1 << 63) - 1,
               (1 << 64) - 1)


class Mutant(NamedTuple):
  """One mutated input.

  Attributes:
    seed: Name of the seed file it came from.
    data: The mutated bytes.
    steps: What was done, in order (enough to redo it by hand).
    images: For a shard: how many images the seed shard holds.
    strict: For a shard: no mutation could legitimately hide a whole
      image (a valid re-framing does: a dropped record, a tar member
      declared larger with its checksum fixed), so fewer results than
      ``images`` must come with an error record.
  """
  seed: str
  data: bytes
  steps: Tuple[str, ...]
  images: int = 1
  strict: bool = True

  def __repr__(self):
    digest = hashlib.sha256(self.data).hexdigest()[:12]
    return (f'Mutant(seed={self.seed!r}, {len(self.data)} bytes, '
            f'sha256 {digest}..., steps={list(self.steps)})')


def flip_bits(data: bytes, bits: Tuple[int, ...]) -> bytes:
  """Flips the given bit positions (``8 * byte + bit``)."""
  buf = bytearray(data)
  for bit in bits:
    if bit // 8 < len(buf):
      buf[bit // 8] ^= 1 << (bit % 8)
  return bytes(buf)


def overwrite(data: bytes, offset: int, value: bytes) -> bytes:
  """Writes ``value`` over the bytes at ``offset`` (length unchanged)."""
  end = min(len(data), offset + len(value))
  return data[:offset] + value[:end - offset] + data[end:]


def truncate(data: bytes, length: int) -> bytes:
  return data[:length]


def delete(data: bytes, offset: int, length: int) -> bytes:
  return data[:offset] + data[offset + length:]


def duplicate(data: bytes, offset: int, length: int) -> bytes:
  return data[:offset + length] + data[offset:]


def splice_header(data: bytes, other: bytes, length: int) -> bytes:
  """Replaces the start of ``data`` with the start of ``other``."""
  return other[:length] + data[length:]


def insert(data: bytes, offset: int, chunk: bytes) -> bytes:
  return data[:offset] + chunk + data[offset:]


# --------------------------------------------------------------------------
# Shard framing.


def tfrecord_length(data: bytes, header: int, length: int,
                    fix_crc: bool) -> bytes:
  """Sets the declared length of the record at ``header``; with
  ``fix_crc`` its length checksum is recomputed so the lie is believed."""
  field = struct.pack('<Q', length & ((1 << 64) - 1))
  crc = (struct.pack('<I', tfrecord_framing.masked_crc32c(field)) if fix_crc
         else data[header + 8:header + 12])
  return overwrite(data, header, field + crc)


def pax_record(keyword: bytes, value: bytes) -> bytes:
  """One ``"<length> <keyword>=<value>\\n"`` record of a pax header."""
  body = b' ' + keyword + b'=' + value + b'\n'
  length = len(body) + 1
  while len(str(length)) + len(body) != length:
    length += 1
  return str(length).encode() + body


def tar_member(name: bytes, kind: bytes, payload: bytes,
               size: int = -1) -> bytes:
  """A ustar header (checksum valid) and ``payload``, padded to blocks.

  ``size`` overrides the declared size (default: the payload's).
  """
  header = bytearray(512)
  header[0:len(name[:100])] = name[:100]
  header[100:108] = b'0000644\x00'
  header[108:124] = b'0000000\x00' * 2
  declared = len(payload) if size < 0 else size
  header[124:136] = (b'%011o\x00' % declared if declared < 8 ** 11 else
                     b'\x80' + declared.to_bytes(11, 'big'))
  header[136:148] = b'00000000000\x00'
  header[156:157] = kind
  header[257:265] = b'ustar\x0000'
  fields.tar_checksum(header, 0)
  padding = -len(payload) % 512
  return bytes(header) + payload + b'\x00' * padding
