"""Every metric the pipeline counts, and every name of a step's extra
outputs, in one place.

Beam names a metric by ``(namespace, name)``. featurize's own live in
``NAMESPACE``. RunInference's live in the model handler's namespace
(``MODEL_NAMESPACE``), where Beam's own collector makes them; the GPU
path reports its batches under the same names (``ModelMetrics``), so
that one run summary (``pipeline/job_metrics.py``) reads both devices.
"""
import functools

import apache_beam as beam

NAMESPACE = 'featurize'
# FeatureModelHandler.get_metrics_namespace: RunInference's metrics.
MODEL_NAMESPACE = 'featurize_model'

# The extra outputs of the read, decode and extract steps.
ERRORS_TAG = 'errors'
COUNTS_TAG = 'counts'

# Read.
IMAGES_READ = 'images_read'
READ_ERRORS = 'read_errors'
READ_MICROS = 'read_micros'
# Decode (the CPU path's step, and the GPU path's decoders).
IMAGES_DECODED = 'images_decoded'
DECODE_ERRORS = 'decode_errors'
DECODE_MICROS = 'decode_micros'
# Extract.
INFERENCE_ERRORS = 'inference_errors'
# Each stage's error lines, by the stage an ``ErrorRecord`` names.
STAGE_ERRORS = {'read': READ_ERRORS, 'decode': DECODE_ERRORS,
                'inference': INFERENCE_ERRORS}
IMAGES_DECODED_ON_GPU = 'images_decoded_on_gpu'
ROUTE_MICROS = 'route_micros'
CPU_DECODE_WAIT_MICROS = 'cpu_decode_wait_micros'
GPU_STEP_PREFIX, GPU_ROUTE_PREFIX = 'gpu_', 'gpu_route_'
# RunInference's names in MODEL_NAMESPACE, as Beam's collector makes them
# (tests/unit/test_metrics.py checks that they still agree).
NUM_INFERENCES = 'num_inferences'
BATCH_SIZE = 'inference_request_batch_size'
BATCH_BYTES = 'inference_request_batch_byte_size'
BATCH_LATENCY_MICROS = 'inference_batch_latency_micro_secs'
LOAD_MODEL_MILLIS = 'load_model_latency_milli_secs'
MODEL_BYTES = 'model_byte_size'
FAILED_BATCHES = 'failed_batches_counter'

MICROS_SUFFIX = '_micros'


def gpu_step_micros(step: str) -> str:
  """A GPU batch's host time in one step (``device_batches.Timings``)."""
  return f'{GPU_STEP_PREFIX}{step}{MICROS_SUFFIX}'


def gpu_route(category: str) -> str:
  """Images the header screen sent to one decoder (``routing``)."""
  return f'{GPU_ROUTE_PREFIX}{category}'


def written(kind: str) -> str:
  """Records written to files of one kind (``features`` or ``errors``)."""
  return f'{kind}_written'


def write_micros(kind: str) -> str:
  """Time spent writing files of one kind."""
  return f'{kind}_write{MICROS_SUFFIX}'


def counter(name: str):
  """featurize's counter ``name``."""
  return beam.metrics.Metrics.counter(NAMESPACE, name)


def distribution(name: str):
  """featurize's distribution ``name``."""
  return beam.metrics.Metrics.distribution(NAMESPACE, name)


class ModelMetrics:
  """RunInference's batch metrics in ``MODEL_NAMESPACE``, for a model run
  outside RunInference (the GPU path): the names Beam's RunInference uses
  (tests/unit/test_metrics.py checks them against Beam's), through Beam's
  public metrics API, so that one run summary reads both devices."""

  def __init__(self):
    model = functools.partial(beam.metrics.Metrics.distribution,
                              MODEL_NAMESPACE)
    self.inferences = beam.metrics.Metrics.counter(MODEL_NAMESPACE,
                                                   NUM_INFERENCES)
    self.failed_batches = beam.metrics.Metrics.counter(MODEL_NAMESPACE,
                                                       FAILED_BATCHES)
    self.batch_size = model(BATCH_SIZE)
    self.batch_bytes = model(BATCH_BYTES)
    self.batch_latency = model(BATCH_LATENCY_MICROS)
    self.load_latency = model(LOAD_MODEL_MILLIS)
    self.model_bytes = model(MODEL_BYTES)

  def model_loaded(self, millis: int, model_bytes: int = 0) -> None:
    """A model load: how long it took, and its size where known."""
    self.load_latency.update(millis)
    self.model_bytes.update(model_bytes)

  def batch_failed(self) -> None:
    """A batch whose images all became error lines."""
    self.failed_batches.inc()

  def batch_done(self, images: int, input_bytes: int,
                 latency_micros: int) -> None:
    """A batch: its images, its input's bytes, and its time from
    submission to results."""
    self.batch_latency.update(latency_micros)
    self.inferences.inc(images)
    self.batch_size.update(images)
    self.batch_bytes.update(input_bytes)


def model_metrics() -> ModelMetrics:
  """The GPU path's ``ModelMetrics``."""
  return ModelMetrics()
