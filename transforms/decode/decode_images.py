"""``DecodeImages``: encoded images in, model-sized RGB arrays out.

A thin DoFn over ``imaging.decode_image``; every failure becomes an
``ErrorRecord`` on the ``errors`` output and the run goes on.
"""
import time
from typing import Iterator

import apache_beam as beam

from transforms import metrics
from transforms.decode import imaging
from transforms.records import DecodedImage, ErrorRecord, ImageRecord



def decode_record(record: ImageRecord, config: imaging.DecodeConfig):
  """Decodes one record; returns a ``DecodedImage`` or an ``ErrorRecord``."""
  try:
    pixels = imaging.decode_image(record.data, config)
  except Exception as e:  # pylint: disable=broad-except
    # An image must never crash the run: imaging.ImageError names its
    # reason, anything else its class.
    return ErrorRecord.from_exception(record.key, record.source, 'decode', e)
  return DecodedImage(record.key, record.source, pixels, record.label)


class _DecodeFn(beam.DoFn):

  def __init__(self, config: imaging.DecodeConfig):
    self._config = config
    self._failures = metrics.counter(metrics.DECODE_ERRORS)
    self._decoded = metrics.counter(metrics.IMAGES_DECODED)
    self._decode_us = metrics.distribution(metrics.DECODE_MICROS)

  def process(self, record: ImageRecord) -> Iterator:
    started = time.perf_counter()
    result = decode_record(record, self._config)
    self._decode_us.update(int((time.perf_counter() - started) * 1e6))
    if isinstance(result, ErrorRecord):
      self._failures.inc()
      yield beam.pvalue.TaggedOutput(metrics.ERRORS_TAG, result)
    else:
      self._decoded.inc()
      yield result


class DecodeImages(beam.PTransform):
  """Decodes and resizes images; outputs ``decoded`` and ``errors``."""

  def __init__(self, config: imaging.DecodeConfig):
    super().__init__()
    self.config = config

  def expand(self, images):
    return images | 'Decode' >> beam.ParDo(_DecodeFn(self.config)).with_outputs(
        metrics.ERRORS_TAG, main='decoded')
