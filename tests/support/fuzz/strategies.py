"""Hypothesis strategies: a real seed file and one to three mutations of it.

Format-blind steps (bit flips, overwrites, truncation, deleted/duplicated
ranges, another format's header spliced in) and format-aware lies about
sizes where a decoder must believe them: image dimensions and chunk lengths,
with their checksums recomputed or not. Draws shrink towards the unmutated
seed. Shards: ``shard_strategies``.
"""
from typing import Dict, NamedTuple

from hypothesis import strategies as st

from tests.support.fuzz import corpus, fields
from tests.support.fuzz import mutations as m


class Step(NamedTuple):
  """One applied mutation: the result, what it did, and its kind."""
  data: bytes
  text: str
  kind: str


# Steps that keep every byte where it was (so framing offsets still hold).
IN_PLACE = ('flip', 'overwrite', 'field')


def _offset(size: int, hot=(0,)):
  # Half the draws land in the 512 bytes after a header (the start of an
  # image, a TFRecord header, a tar member header): where the lengths are.
  if size <= 1:
    return st.just(0)
  near = st.tuples(st.sampled_from(hot), st.integers(0, 511)).map(
      lambda pair: min(size - 1, pair[0] + pair[1]))
  return st.one_of(near, st.integers(0, size - 1))


# Overwrites: extremes, a JPEG marker, and gzip/bzip2 magic (at offset 0
# a tar reader then takes the shard for compressed).
_BLOCKS = (b'\x00' * 4, b'\xff' * 4, b'\x7f\xff\xff\xff', b'\x80\x00\x00\x00',
           b'\xff\xd8\xff', b'\x00' * 8, b'\x1f\x8b\x08\x00', b'BZh9')


@st.composite
def byte_step(draw, data: bytes, others: Dict[str, bytes],
              hot=(0,)) -> Step:
  """One format-blind mutation of ``data``; ``hot``: header offsets."""
  size = len(data)
  if not size:
    return Step(data, 'nothing to mutate', 'flip')
  kind = draw(st.sampled_from(('flip', 'overwrite', 'truncate', 'delete',
                               'duplicate', 'splice', 'insert')))
  at = draw(_offset(size, hot))
  if kind == 'flip':
    bits = draw(st.lists(st.tuples(_offset(size, hot), st.integers(0, 7)),
                         min_size=1, max_size=8))
    positions = tuple(8 * byte + bit for byte, bit in bits)
    return Step(m.flip_bits(data, positions), f'flip bits {positions}', kind)
  if kind == 'overwrite':
    value = draw(st.one_of(st.sampled_from(_BLOCKS),
                           st.binary(min_size=1, max_size=8)))
    return Step(m.overwrite(data, at, value), f'write {value!r} at {at}',
                kind)
  if kind == 'truncate':
    return Step(m.truncate(data, at), f'truncate to {at}', kind)
  if kind in ('delete', 'duplicate'):
    length = draw(st.integers(1, 512))
    mutate = m.delete if kind == 'delete' else m.duplicate
    return Step(mutate(data, at, length), f'{kind} {length} at {at}', kind)
  other_name = draw(st.sampled_from(sorted(others)))
  other = others[other_name]
  length = draw(st.integers(1, min(len(other), 64 if kind == 'splice'
                                   else 1024)))
  if kind == 'splice':
    return Step(m.splice_header(data, other, length),
                f'splice the first {length} bytes of {other_name}', kind)
  return Step(m.insert(data, at, other[:length]),
              f'insert the first {length} bytes of {other_name} at {at}',
              kind)


def _values(field: fields.Field, current: int):
  bits = 40 if field.text else 8 * field.width
  return st.one_of(st.sampled_from(m.INTERESTING),
                   st.integers(0, (1 << bits) - 1),
                   st.integers(-16, 16).map(lambda d: max(0, current + d)))


@st.composite
def field_step(draw, name: str, data: bytes, in_place: bool = False) -> Step:
  """Sets one declared size/length/type field of image ``name``."""
  located = [f for f in fields.image_fields(name, data)
             if not (in_place and f.text)]
  names = sorted({f.name for f in located})
  chosen = draw(st.sampled_from(names))
  field = draw(st.sampled_from([f for f in located if f.name == chosen]))
  raw = data[field.offset:field.offset + field.width]
  current = int(raw) if field.text else int.from_bytes(raw, field.order)
  value = draw(_values(field, current))
  fix = field.fixup is not None and not draw(st.booleans())
  return Step(fields.write_field(data, field, value, fix),
              f'set {field.name} (at {field.offset}) to {value}'
              + (' with its checksum fixed' if fix else ''), 'field')


@st.composite
def image_steps(draw, name: str, data: bytes, in_place: bool = False):
  """A field lie and/or one or two format-blind steps; returns (data,
  descriptions)."""
  seeds = corpus.image_seeds()
  steps = []
  if draw(st.booleans()):
    step = draw(field_step(name, data, in_place))
    data = step.data
    steps.append(step.text)
  for _ in range(draw(st.integers(0 if steps else 1, 2))):
    step = draw(byte_step(data, seeds))
    if in_place and step.kind not in IN_PLACE:
      continue
    data = step.data
    steps.append(step.text)
  return data, tuple(steps)


@st.composite
def image_mutants(draw) -> m.Mutant:
  """A mutated JPEG/PNG/WebP/GIF/TIFF/BMP/PPM seed."""
  seeds = corpus.image_seeds()
  name = draw(st.sampled_from(sorted(seeds)))
  data, steps = draw(image_steps(name, seeds[name]))
  return m.Mutant(name, data, steps)


def final_bytes_step(draw, data, steps, strict, boundaries, hot,
                      force=False):
  """Maybe (or, with ``force``, surely) one more format-blind step over
  the whole shard.

  Flips and overwrites keep the count oracle; a truncation keeps it unless
  it cuts exactly between two records or members (a clean end, which no
  reader can tell from a shorter shard); moved bytes may re-frame.
  """
  if not force and not draw(st.booleans()):
    return data, steps, strict
  step = draw(byte_step(data, corpus.image_seeds(), hot))
  if step.kind == 'truncate':
    cut = len(step.data)
    strict = strict and boundaries is not None and cut not in boundaries
  elif step.kind not in IN_PLACE:
    strict = False
  return step.data, steps + (step.text,), strict


# --------------------------------------------------------------------------
# The exhaustive counterpart: every field of every seed, every value.


def field_sweep(values=m.INTERESTING):
  """Yields a mutant per (image seed, size field, value, checksum fixed or
  not): the lies a random draw would rarely hit in one particular field
  (a GIF's frame-1 extension length, say)."""
  for name, data in sorted(corpus.image_seeds().items()):
    for field in fields.image_fields(name, data):
      for value in values:
        for fix in ((True, False) if field.fixup else (False,)):
          yield m.Mutant(name, fields.write_field(data, field, value, fix),
                         (f'set {field.name} (at {field.offset}) to {value}'
                          + (' with its checksum fixed' if fix else ''),))
