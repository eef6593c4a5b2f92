"""``DecodeImages``: encoded images in, model-sized RGB arrays out.

A thin DoFn over ``imaging.decode_image``; every failure becomes an
``ErrorRecord`` on the ``errors`` output and the run goes on.
"""
import time
from typing import Iterator

import apache_beam as beam

from transforms.decode import imaging
from transforms.records import DecodedImage, ErrorRecord, ImageRecord

ERRORS_TAG = 'errors'


def decode_record(record: ImageRecord, config: imaging.DecodeConfig):
  """Decodes one record; returns a ``DecodedImage`` or an ``ErrorRecord``."""
  try:
    pixels = imaging.decode_image(record.data, config)
  except imaging.ImageError as e:
    return ErrorRecord(record.key, record.source, 'decode', e.error_type,
                       str(e))
  except Exception as e:  # An image must never crash the run.
    return ErrorRecord(record.key, record.source, 'decode',
                       type(e).__name__, str(e) or repr(e))
  return DecodedImage(record.key, record.source, pixels, record.label)


class _DecodeFn(beam.DoFn):

  def __init__(self, config: imaging.DecodeConfig):
    self._config = config
    self._failures = beam.metrics.Metrics.counter('featurize',
                                                  'decode_errors')
    self._decoded = beam.metrics.Metrics.counter('featurize',
                                                 'images_decoded')
    self._decode_us = beam.metrics.Metrics.distribution(
        'featurize', 'decode_micros')

  def process(self, record: ImageRecord) -> Iterator:
    started = time.perf_counter()
    result = decode_record(record, self._config)
    self._decode_us.update(int((time.perf_counter() - started) * 1e6))
    if isinstance(result, ErrorRecord):
      self._failures.inc()
      yield beam.pvalue.TaggedOutput(ERRORS_TAG, result)
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
        ERRORS_TAG, main='decoded')
