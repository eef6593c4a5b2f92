"""Hypothesis strategies for shards: TFRecord and WebDataset tar.

Format-blind steps over the whole shard (``strategies.byte_step``) and
lies that framing must survive: TFRecord lengths with a valid length CRC,
payloads re-framed with valid CRCs (the Example parser sees the garbage),
images mutated inside their records, dropped or repeated records; tar
header fields rewritten with the checksum fixed or not, pax and GNU
long-name headers inserted.
"""
from hypothesis import strategies as st

from pipeline import demo
from tests.support.fuzz import corpus, fields
from tests.support.fuzz import mutations as m
from tests.support.fuzz.limits import READ_LIMIT
from tests.support.fuzz.strategies import (byte_step, final_bytes_step,
                                           image_steps)
from transforms.read import tfrecord_framing

# --------------------------------------------------------------------------
# TFRecord shards.


def _frame(payloads) -> bytes:
  return b''.join(tfrecord_framing.encode_record(p) for p in payloads)


def _record_starts(payloads):
  starts, offset = set(), 0
  for payload in payloads:
    starts.add(offset)
    offset += 16 + len(payload)
  return starts


@st.composite
def tfrecord_mutants(draw) -> m.Mutant:
  """A mutated TFRecord shard of three image Examples."""
  seed = corpus.tfrecord_seed()
  payloads = list(seed.payloads)
  index = draw(st.integers(0, len(payloads) - 1))
  kind = draw(st.sampled_from(('bytes', 'length', 'payload', 'image',
                               'records')))
  steps, strict, data = (), True, seed.data
  if kind == 'length':
    true_length = len(payloads[index])
    length = draw(st.one_of(
        st.sampled_from(m.INTERESTING + (READ_LIMIT, READ_LIMIT + 1)),
        st.integers(-64, 64).map(lambda d: max(0, true_length + d))))
    fix = not draw(st.booleans())
    data = m.tfrecord_length(data, seed.headers[index], length, fix)
    steps = (f'record {index} declares {length} bytes'
             + (' with a valid length CRC' if fix else ''),)
  elif kind == 'payload':  # valid CRCs: the Example parser sees garbage
    step = draw(byte_step(payloads[index], corpus.image_seeds()))
    payloads[index] = step.data
    data = _frame(payloads)
    steps = (f'record {index} payload: {step.text} (CRCs valid)',)
  elif kind == 'image':
    name = corpus.SHARD_IMAGES[index]
    image, done = draw(image_steps(name, corpus.image_seeds()[name]))
    payloads[index] = demo.image_example(demo.Sample(f'img{index}', image,
                                                     index))
    data = _frame(payloads)
    steps = tuple(f'record {index} image: {s}' for s in done)
  elif kind == 'records':
    operation = draw(st.sampled_from(('drop', 'duplicate', 'swap')))
    if operation == 'drop':
      del payloads[index]
    elif operation == 'duplicate':
      payloads.insert(index, payloads[index])
    else:
      payloads[index], payloads[-1] = payloads[-1], payloads[index]
    data, strict = _frame(payloads), False
    steps = (f'{operation} record {index}',)
  boundaries = (_record_starts(payloads) if kind != 'records' else None)
  data, steps, strict = final_bytes_step(
      draw, data, steps, strict, boundaries,
      tuple(sorted(boundaries or seed.headers)), force=not steps)
  return m.Mutant('seed.tfrecord', data, steps, seed.images, strict)


# --------------------------------------------------------------------------
# WebDataset tar shards.

# ustar header fields: name -> (offset, width).
TAR_FIELDS = {'name': (0, 100), 'mode': (100, 8), 'uid': (108, 8),
              'size': (124, 12), 'mtime': (136, 12), 'chksum': (148, 8),
              'type': (156, 1), 'linkname': (157, 100), 'magic': (257, 8),
              'prefix': (345, 155)}

_TAR_TYPES = tuple(bytes([c]) for c in b'01234567gxLKSVMND\x00Z')

_TAR_NAMES = (b'', b'.jpg', b'a/b/c.png', b'sample0.jpg', b'sample1',
              b'x' * 100, b'\xff\xfe.jpg', b'../../up.webp', b'.', b'/',
              b'sample2.jpg.cls')


def _tar_sizes():
  octal = [b'%011o\x00' % v for v in m.INTERESTING if v < 8 ** 11]
  base256 = [b'\x80' + v.to_bytes(11, 'big') for v in m.INTERESTING]
  return st.one_of(
      st.sampled_from(octal + base256 + [
          b'\x80' + b'\xff' * 11, b'\xff' * 12, b'\x00' * 12, b' ' * 12,
          b'99999999999\x00', b'0x10', b'-1', b'7' * 12]),
      st.integers(0, 8 ** 11 - 1).map(lambda v: b'%011o\x00' % v))


def _tar_value(field: str):
  width = TAR_FIELDS[field][1]
  if field == 'size':
    return _tar_sizes()
  if field == 'type':
    return st.sampled_from(_TAR_TYPES)
  if field in ('name', 'linkname', 'prefix'):
    return st.one_of(st.sampled_from(_TAR_NAMES),
                     st.binary(max_size=width))
  return st.binary(min_size=1, max_size=width)


# Pax records that tarfile interprets: sizes, paths, GNU sparse maps.
_PAX_RECORDS = (
    (b'size', b'99999999999999999999'), (b'size', b'-5'), (b'size', b'x'),
    (b'size', b'0'), (b'path', b'sample9.jpg'), (b'path', b'\xff\xfe'),
    (b'linkpath', b'sample0.jpg'), (b'hdrcharset', b'BINARY'),
    (b'mtime', b'not-a-time'), (b'uid', b'-1'),
    (b'GNU.sparse.major', b'1'), (b'GNU.sparse.minor', b'0'),
    (b'GNU.sparse.name', b'sample0.jpg'),
    (b'GNU.sparse.realsize', b'1000000000000'),
    (b'GNU.sparse.size', b'abc'), (b'GNU.sparse.numblocks', b'99999999'),
    (b'GNU.sparse.offset', b'12'), (b'GNU.sparse.numbytes', b'x'),
    (b'GNU.sparse.map', b'0,100,1000,x'),
    (b'GNU.sparse.map', b'0,1000000000000'),
)
_PAX_BROKEN = (b'99999999 size=1\n', b'0 x=\n', b'5 a\n', b'abc',
               b'11 path=\xff\n', b'3 \n')


@st.composite
def _pax_header(draw) -> bytes:
  records = draw(st.lists(st.sampled_from(_PAX_RECORDS), min_size=1,
                          max_size=5))
  body = b''.join(m.pax_record(k, v) for k, v in records)
  if draw(st.booleans()):
    body += draw(st.sampled_from(_PAX_BROKEN))
  kind = draw(st.sampled_from((b'x', b'g')))
  return m.tar_member(b'././@PaxHeader', kind, body)


@st.composite
def tar_mutants(draw) -> m.Mutant:
  """A mutated WebDataset tar of three samples."""
  seed = corpus.tar_seed()
  index = draw(st.integers(0, len(seed.headers) - 1))
  header = seed.headers[index]
  kind = draw(st.sampled_from(('bytes', 'header', 'pax', 'longname',
                               'image')))
  steps, strict, data = (), True, seed.data
  if kind == 'header':
    field = draw(st.sampled_from(sorted(TAR_FIELDS)))
    offset, width = TAR_FIELDS[field]
    value = draw(_tar_value(field))[:width]
    fix = not draw(st.booleans())
    buf = bytearray(m.overwrite(data, header + offset, value))
    if fix:
      fields.tar_checksum(buf, header)
    data, strict = bytes(buf), not fix
    steps = (f'member {index} {field} = {value!r}'
             + (' with its checksum fixed' if fix else ''),)
  elif kind == 'pax':
    pax = draw(_pax_header())
    data, strict = m.insert(data, header, pax), False
    steps = (f'pax header {pax[512:].rstrip(bytes(1))!r} before member '
             f'{index}',)
  elif kind == 'longname':
    name = draw(st.sampled_from(_TAR_NAMES)) + b'\x00'
    size = draw(st.one_of(st.just(-1), st.sampled_from(m.INTERESTING)))
    data = m.insert(data, header, m.tar_member(b'././@LongLink', b'L', name,
                                               size))
    strict = False
    steps = (f'GNU long name {name!r} (declared {size}) before member '
             f'{index}',)
  elif kind == 'image' and index % 2 == 0:  # members 0, 2, 4 are images
    name = corpus.SHARD_IMAGES[index // 2]
    start, size = header + 512, len(seed.payloads[index][1])
    image, done = draw(image_steps(name, data[start:start + size],
                                   in_place=True))
    data = data[:start] + image + data[start + size:]
    steps = tuple(f'member {index} image: {s}' for s in done)
  boundaries = set(seed.headers) if kind in ('bytes', 'header',
                                             'image') else None
  data, steps, strict = final_bytes_step(
      draw, data, steps, strict, boundaries, seed.headers, force=not steps)
  return m.Mutant('seed.tar', data, steps, seed.images, strict)
