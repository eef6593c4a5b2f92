"""The GPU path's batches, bounded by count and by bytes.

``RoutedBatcher`` fills each batch from both of the GPU path's decoders.
Written here rather than with Beam's ``BatchElements``, which bounds a
batch by its element count or by a total weight, not by both, and knows
nothing of decodes still under way: a GPU batch needs a fixed count (one
compiled shape), a cap on the encoded bytes it holds in host memory, and
the CPU decoder's rows as they finish.
"""
import collections
import time
from concurrent import futures
from typing import Any, Deque, Iterator, List, NamedTuple, Tuple

import numpy as np

from transforms.records import ErrorRecord

class Batch(NamedTuple):
  """One model call's images, from both decoders.

  Attributes:
    device: Images for nvJPEG, with what the header screen read.
    decoded: Images the CPU decoder finished, with their model-sized
      ``uint8`` pixels.
  """
  device: List[Tuple[Any, Any]]
  decoded: List[Tuple[Any, np.ndarray]]

  def __len__(self) -> int:
    return len(self.device) + len(self.decoded)


def decoded_size(screen) -> int:
  """Bytes of an image's full-size RGB pixels, from its header screen."""
  return screen.width * screen.height * 3


class RoutedBatcher:
  """Fills model batches from two streams that run side by side.

  Images for the device wait here, as encoded bytes, until a batch is
  full. Images for the CPU decoder are decoding in a pool already; each
  joins whichever batch is being filled when its decode finishes, so a
  slow decode (a large progressive JPEG) never holds back the GPU's
  batches. Decodes that failed come out of ``errors``.

  Memory is bounded: a batch holds at most ``batch_size`` images,
  ``max_bytes`` of encoded device images and ``max_decoded_bytes`` of
  their full-size pixels (what nvJPEG's output and the resize's buffer
  take on the device: ``screen.width * screen.height * 3``; an image
  larger than that forms a batch alone), and at most ``max_pending`` CPU
  decodes are under way (``add_cpu`` waits for the oldest beyond that).
  """

  def __init__(self, batch_size: int, max_bytes: int, max_decoded_bytes: int,
               max_pending: int):
    if min(batch_size, max_bytes, max_decoded_bytes, max_pending) < 1:
      raise ValueError('a batch needs room for at least one image')
    self._batch_size = batch_size
    self._max_bytes = max_bytes
    self._max_decoded_bytes = max_decoded_bytes
    self._max_pending = max_pending
    self._device: List[Tuple[Any, Any]] = []
    self._bytes = 0
    self._decoded_bytes = 0
    self._pending: Deque[Tuple[Any, futures.Future]] = collections.deque()
    self._decoded: List[Tuple[Any, np.ndarray]] = []
    self._errors: List[Any] = []
    self.waited_s = 0.0  # time add_cpu spent waiting for the pool

  def add_device(self, image, screen) -> None:
    """Queues an image for nvJPEG (``image.data`` is its encoded bytes)."""
    self._device.append((image, screen))
    self._bytes += len(image.data)
    self._decoded_bytes += decoded_size(screen)

  def add_cpu(self, image, decoding: futures.Future) -> None:
    """Queues a CPU decode under way; ``decoding`` resolves to a
    ``DecodedImage`` or an ``ErrorRecord``."""
    self._pending.append((image, decoding))
    if len(self._pending) > self._max_pending:
      started = time.perf_counter()
      futures.wait([self._pending[0][1]])
      self.waited_s += time.perf_counter() - started

  def _collect(self) -> None:
    """Moves finished CPU decodes to the batch (or to the errors), in
    the order they were queued."""
    while self._pending and self._pending[0][1].done():
      image, decoding = self._pending.popleft()
      result = decoding.result()
      if isinstance(result, ErrorRecord):
        self._errors.append(result)
      else:
        self._decoded.append((image, result.pixels))

  def errors(self) -> List[Any]:
    """The CPU decodes that failed since the last call."""
    self._collect()
    errors, self._errors = self._errors, []
    return errors

  def _full(self) -> bool:
    return (len(self._device) + len(self._decoded) >= self._batch_size or
            self._bytes >= self._max_bytes or
            self._decoded_bytes >= self._max_decoded_bytes)

  def _take(self) -> Batch:
    # CPU rows first: they waited for their decode already.
    decoded = self._decoded[:self._batch_size]
    self._decoded = self._decoded[len(decoded):]
    room = self._batch_size - len(decoded)
    device: List[Tuple[Any, Any]] = []
    total, pixels = 0, 0
    for image, screen in self._device[:room]:
      size = decoded_size(screen)
      if device and (total + len(image.data) > self._max_bytes or
                     pixels + size > self._max_decoded_bytes):
        break
      device.append((image, screen))
      total += len(image.data)
      pixels += size
    self._device = self._device[len(device):]
    self._bytes -= total
    self._decoded_bytes -= pixels
    return Batch(device, decoded)

  def ready(self) -> Iterator[Batch]:
    """The batches that are full now."""
    self._collect()
    while self._full():
      yield self._take()

  def drain(self) -> Iterator[Batch]:
    """Waits for every CPU decode and gives all that is left, in batches
    (the last one may be short); then ``errors`` holds the failures."""
    while self._pending:
      futures.wait([self._pending[0][1]])
      self._collect()
      while self._full():
        yield self._take()
    while self._device or self._decoded:
      yield self._take()
