"""Encoded images grouped into batches bounded by count and by bytes.

Written here rather than with Beam's ``BatchElements``, which bounds a
batch by its element count or by a total weight, not by both: a GPU batch
needs a fixed count (one compiled shape) and a cap on the encoded bytes
it holds in host memory.
"""
from typing import Callable, List, Optional, Sequence, TypeVar

Item = TypeVar('Item')


class Batcher:
  """Collects items until a batch is full by count or by bytes.

  ``add`` returns the finished batch when the item completes one (or
  when the item would push the batch over ``max_bytes``: the batch goes
  out without it, and it starts the next one). ``flush`` returns what is
  left. A single item larger than ``max_bytes`` forms a batch alone.
  """

  def __init__(self, max_count: int, max_bytes: int,
               size_of: Callable[[Item], int]):
    if max_count < 1 or max_bytes < 1:
      raise ValueError('a batch needs room for at least one item')
    self._max_count = max_count
    self._max_bytes = max_bytes
    self._size_of = size_of
    self._items: List[Item] = []
    self._bytes = 0

  def add(self, item: Item) -> Optional[List[Item]]:
    size = self._size_of(item)
    finished = None
    if self._items and self._bytes + size > self._max_bytes:
      finished = self.flush()
    self._items.append(item)
    self._bytes += size
    if len(self._items) >= self._max_count:
      # Not after a flush for bytes: the batch then holds one item, and
      # with max_count 1 no item ever waits for the next.
      finished = self.flush()
    return finished

  def flush(self) -> Optional[List[Item]]:
    """The items held, as a batch (None when there are none)."""
    if not self._items:
      return None
    items, self._items, self._bytes = self._items, [], 0
    return items


def chunks_by_bytes(sizes: Sequence[int], max_bytes: int) -> List[range]:
  """Consecutive index ranges whose sizes sum to at most ``max_bytes``
  (an item larger than that forms a range alone)."""
  ranges, start, total = [], 0, 0
  for index, size in enumerate(sizes):
    if index > start and total + size > max_bytes:
      ranges.append(range(start, index))
      start, total = index, 0
    total += size
  if start < len(sizes):
    ranges.append(range(start, len(sizes)))
  return ranges
