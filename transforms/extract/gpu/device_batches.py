"""One batch of images through the GPU path, without Beam.

``start_batch`` takes a ``batching.Batch``: images the header screen
routed to nvJPEG (``routing``), still encoded, and images the CPU decoder
has finished. It decodes the first kind on the device (an image nvJPEG
refuses after all goes through the CPU path's own decoder,
``transforms.decode.decode_images.decode_record``: same pixels, same error
lines), resizes every image of the batch in one ragged call on the device
(``ragged_resize``: the CPU path's resize rule, exactly), and starts the
model. It returns without waiting for the model, so the caller can
prepare the next batch meanwhile; ``finish_batch`` waits and gives the
features.
"""
import time
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple


from transforms.decode import imaging
from transforms.decode.decode_images import decode_record
from transforms.extract.gpu import batching, jpeg_header, routing
from transforms.records import (ErrorRecord, FeatureRecord, ImageRecord,
                                features_per_image)

class Timings(NamedTuple):
  """Seconds one batch spent on the helper thread in each step.

  ``device_decode`` is nvJPEG's; ``fallback_decode`` the CPU decodes of
  images nvJPEG refused; ``resize`` packing the batch and starting its
  resize; ``dispatch`` starting the model. The ``_cpu`` fields are the
  helper thread's own CPU time in the same steps (decode with its
  fallback): where they fall short of the wall time the thread waited
  without a core, where they match it the thread worked or spun (CUDA's
  spin-wait counts as CPU).
  """
  device_decode: float
  fallback_decode: float
  resize: float
  dispatch: float
  decode_cpu: float = 0.0
  resize_cpu: float = 0.0
  dispatch_cpu: float = 0.0


class PendingBatch(NamedTuple):
  """A batch whose model call may still be running.

  Attributes:
    images: The images in the order of the batch's rows.
    outputs: The model's output (a device array, or a dict of them by
      layer name; rows past ``len(images)`` are padding).
    on_device: How many were decoded on the device.
    timings: Where the host's time went while starting it.
  """
  images: List[ImageRecord]
  outputs: Any
  on_device: int
  timings: Timings


class BatchResult(NamedTuple):
  """What one batch gave.

  Attributes:
    features: A feature record per image that went through the model.
    errors: Error records of the images that did not.
    on_device: How many were decoded on the device.
    timings: Where the host's time went while starting it (None when no
      image decoded).
  """
  features: List[FeatureRecord]
  errors: List[ErrorRecord]
  on_device: int
  timings: Optional[Timings]


def _error(image: ImageRecord, stage: str, e: Exception) -> ErrorRecord:
  return ErrorRecord.from_exception(image.key, image.source, stage, e)


def batch_of(images: Sequence[ImageRecord], config: imaging.DecodeConfig
            ) -> Tuple[batching.Batch, List[ErrorRecord]]:
  """Routes images and runs their CPU decodes now, one after another:
  the batch ``ExtractOnDevice`` would make of them (which runs the CPU
  decodes in a pool instead), and the errors of those decodes."""
  device, decoded, errors = [], [], []
  for image in images:
    route = routing.route(image.data, config)
    if route.on_device:
      device.append((image, route.screen))
      continue
    result = decode_record(image, config)
    if isinstance(result, ErrorRecord):
      errors.append(result)
    else:
      decoded.append((image, result.pixels))
  return batching.Batch(device, decoded), errors


def decode_on_device(batch: batching.Batch, decoder,
                     config: imaging.DecodeConfig):
  """Decodes a batch's device images; the CPU path takes those refused.

  Returns:
    ``(decoded, rows, errors, timings)``: ``decoded`` holds
    ``(image, pixels, orientation)`` triples of nvJPEG's full-size pixels
    (in the decoder's layout, EXIF orientation not yet applied); ``rows``
    ``(image, pixels)`` pairs of model-sized rows (the batch's CPU rows,
    then the fallbacks); ``errors`` the CPU path's ``ErrorRecord`` of
    images it cannot use either; ``timings`` seconds on the device and in
    the fallback.
  """
  started = time.perf_counter()
  decoded: List[Tuple[ImageRecord, Any, int]] = []
  refused = []
  # One nvJPEG call for the batch, whose full-size pixels the batcher
  # bounded (batching.RoutedBatcher); each JPEG as nvJPEG takes it
  # (without padding after EOI, grayscale marked 1x1).
  try:
    pixels = decoder.decode([jpeg_header.device_bytes(image.data, screen)
                             for image, screen in batch.device])
  except Exception as e:  # pylint: disable=broad-except
    # The decoder refuses single images itself (as None); an error of the
    # decoder as a whole costs its images an error line each, never the
    # run, and the batch's CPU rows go on.
    return ([], list(batch.decoded),
            [_error(image, 'decode', e) for image, _ in batch.device],
            (time.perf_counter() - started, 0.0))
  for (image, screen), result in zip(batch.device, pixels):
    if result is None:  # nvJPEG refused it: the CPU path decides
      refused.append(image)
    else:
      decoded.append((image, result, screen.orientation))
  device_done = time.perf_counter()
  errors = []
  rows = list(batch.decoded)
  for image in refused:
    result = decode_record(image, config)
    if isinstance(result, ErrorRecord):
      errors.append(result)
    else:
      rows.append((image, result.pixels))
  timings = (device_done - started, time.perf_counter() - device_done)
  return decoded, rows, errors, timings


def start_batch(batch: batching.Batch, decoder, model, replica: int,
                config: imaging.DecodeConfig
               ) -> Tuple[Optional[PendingBatch], List[ErrorRecord]]:
  """Decodes a batch and starts the model on it (see module docstring).

  Args:
    batch: At most ``model.batch_size`` images.
    decoder: A ``decoders`` decoder for the replica's device.
    model: A ``device_model.DeviceModel``.
    replica: Which of the model's devices runs this batch.
    config: The decode rules.

  Returns:
    The pending batch (None when no image decoded) and the error records
    of images that could not be decoded, or of the whole batch when the
    model could not be started.
  """
  cpu_started = time.thread_time()
  decoded, rows, errors, (device_decode, fallback_decode) = (
      decode_on_device(batch, decoder, config))
  cpu_decoded = time.thread_time()
  if not decoded and not rows:
    return None, errors
  good = [image for image, _, _ in decoded] + [image for image, _ in rows]
  try:
    started = time.perf_counter()
    pixels = decoder.resize_batch([(p, turn) for _, p, turn in decoded],
                                  [p for _, p in rows])
    resized, cpu_resized = time.perf_counter(), time.thread_time()
    outputs = model(pixels, replica)
    dispatched, cpu_dispatched = time.perf_counter(), time.thread_time()
  except Exception as e:  # pylint: disable=broad-except
    # Like the CPU path's dead-letter output: the batch's images become
    # error lines and the run goes on.
    return None, errors + [_error(image, 'inference', e) for image in good]
  timings = Timings(device_decode, fallback_decode, resized - started,
                    dispatched - resized, cpu_decoded - cpu_started,
                    cpu_resized - cpu_decoded, cpu_dispatched - cpu_resized)
  return PendingBatch(good, outputs, len(decoded), timings), errors


def finish_batch(pending: PendingBatch
                ) -> Tuple[List[FeatureRecord], List[ErrorRecord]]:
  """Waits for a batch's features and copies them to the host."""
  try:
    rows = features_per_image(pending.outputs, len(pending.images))
  except Exception as e:  # pylint: disable=broad-except
    # An asynchronous failure of the model call surfaces here.
    return [], [_error(image, 'inference', e) for image in pending.images]
  return [FeatureRecord(image.key, row, image.label, image.source)
          for image, row in zip(pending.images, rows)], []


def run_batch(batch: batching.Batch, decoder, model, replica: int,
              config: imaging.DecodeConfig) -> BatchResult:
  """``start_batch`` then ``finish_batch``: one batch, waited for."""
  return result_of(*start_batch(batch, decoder, model, replica, config))


def failed(batch: batching.Batch, error: Exception) -> BatchResult:
  """A batch that could not be run: an error line for each image."""
  images = [image for image, _ in batch.device] + [
      image for image, _ in batch.decoded]
  return BatchResult([], [_error(image, 'inference', error)
                          for image in images], 0, None)


def result_of(pending: Optional[PendingBatch],
              errors: List[ErrorRecord]) -> BatchResult:
  """What ``start_batch`` returned, finished: waits for the features."""
  if pending is None:
    return BatchResult([], errors, 0, None)
  features, more = finish_batch(pending)
  return BatchResult(features, errors + more, pending.on_device,
                     pending.timings)
