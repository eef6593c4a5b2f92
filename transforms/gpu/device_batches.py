"""One batch of encoded images through the GPU path, without Beam.

``start_batch`` screens each image's header, decodes the JPEGs nvJPEG can
take on the device, sends every other image through the CPU path's own
decoder (``transforms.decode.decode_record``: same pixels, same error
lines), stacks the pixels into one fixed-size batch and starts the model.
It returns without waiting for the model, so the caller can prepare the
next batch meanwhile; ``finish_batch`` waits and gives the features.
"""
import time
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from transforms import imaging
from transforms.decode import decode_record
from transforms.gpu import batching, jpeg_header
from transforms.records import ErrorRecord, FeatureRecord, ImageRecord

# Full-size decoded pixels held on the device at once, per nvJPEG call
# (a batch of 256 phone photos would be 9 GB; ImageNet-sized ones 0.14 GB).
MAX_DECODED_BYTES = 1 << 30


class Timings(NamedTuple):
  """Seconds one batch spent on the host in each step."""
  screen: float
  device_decode: float
  cpu_decode: float
  stack: float
  dispatch: float


class PendingBatch(NamedTuple):
  """A batch whose model call may still be running.

  Attributes:
    images: The images in the order of the batch's rows.
    outputs: The model's output (a device array; rows past
      ``len(images)`` are padding).
    on_device: How many were decoded on the device.
    timings: Where the host's time went while starting it.
  """
  images: List[ImageRecord]
  outputs: Any
  on_device: int
  timings: Timings


def _error(image: ImageRecord, stage: str, e: Exception) -> ErrorRecord:
  return ErrorRecord(image.key, image.source, stage, type(e).__name__,
                     str(e) or repr(e))


def decode_batch(images: Sequence[ImageRecord], decoder,
                 config: imaging.DecodeConfig):
  """Decodes a batch: nvJPEG where the header allows, the CPU path else.

  Returns:
    ``(decoded, errors, on_device, timings)``: ``decoded`` holds
    ``(image, pixels)`` pairs, device-decoded ones first; ``errors`` the
    CPU path's ``ErrorRecord`` for images it cannot use.
  """
  started = time.perf_counter()
  screens = [jpeg_header.screen(image.data, config.max_pixels)
             for image in images]
  for_device = [i for i, s in enumerate(screens) if s.on_device]
  screened = time.perf_counter()
  decoded: List[Tuple[ImageRecord, Any]] = []
  on_host = [i for i, s in enumerate(screens) if not s.on_device]
  sizes = [screens[i].width * screens[i].height * 3 for i in for_device]
  for chunk in batching.chunks_by_bytes(sizes, MAX_DECODED_BYTES):
    indices = [for_device[c] for c in chunk]
    pixels = decoder.decode([images[i].data for i in indices],
                            [screens[i].orientation for i in indices])
    for index, result in zip(indices, pixels):
      if result is None:  # nvJPEG refused it: the CPU path decides
        on_host.append(index)
      else:
        decoded.append((images[index], result))
  on_device = len(decoded)
  device_done = time.perf_counter()
  errors = []
  for index in sorted(on_host):
    result = decode_record(images[index], config)
    if isinstance(result, ErrorRecord):
      errors.append(result)
    else:
      decoded.append((images[index], result.pixels))
  timings = (screened - started, device_done - screened,
             time.perf_counter() - device_done)
  return decoded, errors, on_device, timings


def start_batch(images: Sequence[ImageRecord], decoder, model,
                replica: int, config: imaging.DecodeConfig
               ) -> Tuple[Optional[PendingBatch], List[ErrorRecord]]:
  """Decodes a batch and starts the model on it (see module docstring).

  Args:
    images: At most ``model.batch_size`` encoded images.
    decoder: A ``decoders`` decoder for the replica's device.
    model: A ``device_model.DeviceModel``.
    replica: Which of the model's devices runs this batch.
    config: The decode rules.

  Returns:
    The pending batch (None when no image decoded) and the error records
    of images that could not be decoded, or of the whole batch when the
    model could not be started.
  """
  decoded, errors, on_device, (screen, device_decode, cpu_decode) = (
      decode_batch(images, decoder, config))
  if not decoded:
    return None, errors
  good = [image for image, _ in decoded]
  try:
    started = time.perf_counter()
    pixels = decoder.stack([p for _, p in decoded], model.batch_size)
    stacked = time.perf_counter()
    outputs = model(pixels, replica)
    dispatched = time.perf_counter()
  except Exception as e:  # pylint: disable=broad-except
    # Like the CPU path's dead-letter output: the batch's images become
    # error lines and the run goes on.
    return None, errors + [_error(image, 'inference', e) for image in good]
  timings = Timings(screen, device_decode, cpu_decode, stacked - started,
                    dispatched - stacked)
  return PendingBatch(good, outputs, on_device, timings), errors


def finish_batch(pending: PendingBatch
                ) -> Tuple[List[FeatureRecord], List[ErrorRecord]]:
  """Waits for a batch's features and copies them to the host."""
  try:
    features = np.asarray(pending.outputs)[:len(pending.images)]
  except Exception as e:  # pylint: disable=broad-except
    # An asynchronous failure of the model call surfaces here.
    return [], [_error(image, 'inference', e) for image in pending.images]
  return [FeatureRecord(image.key, row, image.label, image.source)
          for image, row in zip(pending.images, features)], []
