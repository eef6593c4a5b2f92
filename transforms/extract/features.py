"""``ExtractFeatures``: encoded images in, the model's features out, on
the device the model names.

The one extract step of every job, for both devices, as Beam's model
handlers take ``device=``:

* ``cpu``: the CPU path's decoder (``DecodeImages``), then RunInference
  with our model handler in small batches. A batch whose inference fails
  turns into one error line per image of the batch, instead of failing
  the run.
* ``gpu``: ``ExtractOnDevice``, which decodes and runs the model on the
  GPUs (``transforms/extract/gpu/``).
"""
from typing import Iterator

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from transforms import metrics
from transforms.decode import imaging
from transforms.decode.decode_images import DecodeImages
from transforms.extract import models
from transforms.extract.gpu.on_device import ExtractOnDevice
from transforms.extract.model_handler import FeatureModelHandler
from transforms.records import DecodedImage, ErrorRecord


def batch_failure_to_errors(failure) -> Iterator[ErrorRecord]:
  """One ``ErrorRecord`` per image of a batch whose inference raised.

  Args:
    failure: What RunInference's dead-letter output holds: the batch and
      ``(exception type, message, traceback lines)``.
  """
  batch, (error_type, message, unused_traceback) = failure
  metrics.counter(metrics.INFERENCE_ERRORS).inc(len(batch))
  image: DecodedImage
  for image in batch:
    yield ErrorRecord(image.key, image.source, 'inference',
                      getattr(error_type, '__name__', str(error_type)),
                      str(message))


class RunModel(beam.PTransform):
  """Runs the CPU model over ``DecodedImage``s in small batches.

  Returns a dict with ``features`` (``FeatureRecord``) and ``errors``
  (``ErrorRecord``).
  """

  def __init__(self, config: models.ModelConfig):
    super().__init__()
    self.config = config

  def expand(self, images):
    features, failures = (
        images
        | 'RunInference' >> RunInference(
            FeatureModelHandler(self.config)).with_exception_handling())
    errors = (
        failures.failed_inferences
        | 'FailedBatchesToErrors' >> beam.FlatMap(batch_failure_to_errors))
    return {'features': features, 'errors': errors}


class ExtractFeatures(beam.PTransform):
  """Turns ``ImageRecord``s into features on ``model.device``.

  Returns a dict with ``features`` (``FeatureRecord``) and ``errors``
  (``ErrorRecord``: the images that could not be decoded or run).
  """

  def __init__(self, model: models.ModelConfig, decode: imaging.DecodeConfig):
    super().__init__()
    self.model = model
    self.decode = decode

  def expand(self, images):
    if self.model.device == 'gpu':
      # Encoded bytes go to the GPUs, which decode and run the model.
      return images | 'ExtractOnDevice' >> ExtractOnDevice(self.model,
                                                          self.decode)
    # The next batch decodes while the model runs this one.
    decoded = images | 'DecodeImages' >> DecodeImages(
        self.decode, ahead=models.effective_batch_size(self.model))
    extracted = decoded.decoded | 'RunModel' >> RunModel(self.model)
    errors = ((decoded.errors, extracted['errors'])
              | 'GatherErrors' >> beam.Flatten())
    return {'features': extracted['features'], 'errors': errors}
