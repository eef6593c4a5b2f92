"""``ExtractFeatures``: decoded images in, VGG16 features out.

RunInference with our model handler; a batch whose inference fails turns
into one error line per image of the batch, instead of failing the run.
"""
from typing import Iterator

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from transforms.extract import vgg16
from transforms.extract.model_handler import VGG16FeatureHandler
from transforms.records import DecodedImage, ErrorRecord


def batch_failure_to_errors(failure) -> Iterator[ErrorRecord]:
  """One ``ErrorRecord`` per image of a batch whose inference raised.

  Args:
    failure: What RunInference's dead-letter output holds: the batch and
      ``(exception type, message, traceback lines)``.
  """
  batch, (error_type, message, unused_traceback) = failure
  beam.metrics.Metrics.counter('featurize', 'inference_errors').inc(
      len(batch))
  for image in batch:
    image: DecodedImage
    yield ErrorRecord(image.key, image.source, 'inference',
                      getattr(error_type, '__name__', str(error_type)),
                      str(message))


class ExtractFeatures(beam.PTransform):
  """Runs VGG16 over ``DecodedImage``s in small batches.

  Returns a dict with ``features`` (``FeatureRecord``) and ``errors``
  (``ErrorRecord``).
  """

  def __init__(self, config: vgg16.ModelConfig):
    super().__init__()
    self.config = config

  def expand(self, images):
    features, failures = (
        images
        | 'VGG16' >> RunInference(
            VGG16FeatureHandler(self.config)).with_exception_handling())
    errors = (
        failures.failed_inferences
        | 'FailedBatchesToErrors' >> beam.FlatMap(batch_failure_to_errors))
    return {'features': features, 'errors': errors}
