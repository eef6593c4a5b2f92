"""``ExtractOnDevice``: encoded images in, VGG16 features out, on GPUs.

``ExtractFeatures`` runs it for ``--device gpu``, where the CPU path runs
``DecodeImages`` + ``RunModel``: what crosses the Beam boundary is the
encoded bytes (``ImageRecord``). The bundle's thread reads each image's
header (``routing``) and sends it to one of two decoders: baseline JPEGs
wait, encoded, for nvJPEG's batched hardware decoder; everything else
(progressive JPEGs, other formats, CMYK...) goes at once to a pool of
threads running the CPU path's own decoder, whose finished rows join the
batch being filled (``batching.RoutedBatcher``). Helper threads run full
batches through the backend (``backends``: nvJPEG, the resize on the
device and the model, in this process or in the machine's server
process) while the bundle's thread reads and writes and the GPU runs the
batch before. Each DoFn keeps at most the backend's ``in_flight``
batches submitted.
"""
import logging
import time
from collections import deque
from concurrent import futures
from typing import Any, Deque, Iterator, List, Optional, Tuple

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils import shared

from transforms import metrics
from transforms.decode import imaging
from transforms.decode.decode_images import decode_record
from transforms.extract import models
from transforms.extract.gpu import (backends, batching, device_batches,
                                    routing, runtime)
from transforms.records import ErrorRecord, ImageRecord

# Host memory for the encoded bytes of one batch being collected.
MAX_ENCODED_BATCH_BYTES = 256 << 20
# Device memory for one batch's full-size decoded pixels, held twice (by
# nvJPEG's output and the resize's flat buffer): a batch of 256 phone
# photos would be 9 GB, of ImageNet-sized ones 0.14 GB, of the web
# profile's 0.5 GB on average. It also keeps the resize's addresses
# within int32.
MAX_DECODED_BATCH_BYTES = 1 << 30
# CPU decodes under way or finished but not yet in a batch, per DoFn, in
# batches: bounds their memory (encoded bytes and 150 KB rows).
PENDING_CPU_BATCHES = 2

# A batch submitted to the backend: when, its future, the batch.
_Submitted = Tuple[float, futures.Future, batching.Batch]


class _ExtractOnDeviceFn(beam.DoFn):
  """Batches encoded images and runs them through a ``DeviceBackend``."""

  def __init__(self, model_config: models.ModelConfig,
               decode_config: imaging.DecodeConfig):
    self._model_config = model_config
    self._decode_config = decode_config
    self._shared = shared.Shared()
    # Made in setup and start_bundle (none of them is picklable).
    self._backend: Optional[backends.DeviceBackend] = None
    self._helpers: Optional[futures.ThreadPoolExecutor] = None
    self._cpu: Optional[runtime.CpuDecoders] = None
    self._batcher: Optional[batching.RoutedBatcher] = None
    self._pending: Deque[_Submitted] = deque()
    self._load_to_report: Optional[int] = None
    self._decoded = metrics.counter(metrics.IMAGES_DECODED)
    self._decode_errors = metrics.counter(metrics.DECODE_ERRORS)
    self._inference_errors = metrics.counter(metrics.INFERENCE_ERRORS)
    self._on_device = metrics.counter(metrics.IMAGES_DECODED_ON_GPU)
    # RunInference's batch metrics, which featurize run's summary reads
    # on both devices.
    self._model_metrics = metrics.ModelMetrics()
    self._step_micros = {
        name: metrics.distribution(metrics.gpu_step_micros(name))
        for name in device_batches.Timings._fields + ('wait',)}
    self._routes = {
        category: metrics.counter(metrics.gpu_route(category))
        for category in routing.CATEGORIES}
    # Time per image on the bundle's thread (summed; the summary divides
    # by the images read), as the reader and the writer count theirs.
    self._route_micros = metrics.counter(metrics.ROUTE_MICROS)
    self._cpu_wait_micros = metrics.counter(metrics.CPU_DECODE_WAIT_MICROS)

  def setup(self):
    self._backend = backends.connect(self._model_config, self._decode_config,
                                     self._shared.acquire)
    # Helper threads prepare batches while this thread reads and writes;
    # they touch no Beam state (Beam's metrics belong to the bundle's
    # thread: they are updated here).
    self._helpers = futures.ThreadPoolExecutor(
        self._backend.helper_threads,
        thread_name_prefix='featurize-gpu-batches',
        initializer=runtime.name_thread, initargs=('fz-gpu-batches',))
    self._cpu = runtime.cpu_decoders(
        self._model_config.gpu.cpu_decode_threads)
    # Reported from process(): metrics updated in setup are lost (Beam's
    # RunInference defers its load metric the same way).
    self._load_to_report = self._backend.load_millis
    if self._load_to_report is not None:
      logging.info('GPU runtime ready in %.1f s', self._load_to_report / 1e3)

  def start_bundle(self):
    runtime.name_thread('fz-bundle')  # Beam's thread: for top -H
    batch_size = self._ready().batch_size
    self._batcher = batching.RoutedBatcher(
        batch_size, MAX_ENCODED_BATCH_BYTES, MAX_DECODED_BATCH_BYTES,
        max_pending=PENDING_CPU_BATCHES * batch_size)
    self._pending.clear()

  def process(self, image: ImageRecord) -> Iterator:
    batcher = self._filling()
    if self._load_to_report is not None:
      # The model's byte size is not measured on this path.
      self._model_metrics.model_loaded(self._load_to_report)
      self._load_to_report = None
    started = time.perf_counter()
    route = routing.route(image.data, self._decode_config)
    self._routes[route.category].inc()
    if route.on_device:
      batcher.add_device(image, route.screen)
    else:
      assert self._cpu is not None  # made in setup
      batcher.add_cpu(image, self._cpu.submit(
          decode_record, image, self._decode_config))
    self._route_micros.inc(int((time.perf_counter() - started) * 1e6))
    yield from self._errors(batcher.errors())
    for batch in batcher.ready():
      yield from self._start(batch)

  def finish_bundle(self) -> Iterator:
    batcher = self._filling()
    for batch in batcher.drain():
      for output in self._start(batch):
        yield self._windowed(output)
    for output in self._errors(batcher.errors()):
      yield self._windowed(output)
    while self._pending:
      for output in self._finish(self._pending.popleft()):
        yield self._windowed(output)
    self._cpu_wait_micros.inc(int(batcher.waited_s * 1e6))

  @staticmethod
  def _windowed(output):
    if isinstance(output, beam.pvalue.TaggedOutput):
      return beam.pvalue.TaggedOutput(
          output.tag, GlobalWindows.windowed_value(output.value))
    return GlobalWindows.windowed_value(output)

  def teardown(self):
    if self._helpers is not None:
      self._helpers.shutdown(wait=True)

  def _ready(self) -> backends.DeviceBackend:
    if self._backend is None:
      raise RuntimeError('ExtractOnDevice: setup() has not run')
    return self._backend

  def _filling(self) -> batching.RoutedBatcher:
    if self._batcher is None:
      raise RuntimeError('ExtractOnDevice: start_bundle() has not run')
    return self._batcher

  def _start(self, batch: batching.Batch) -> Iterator:
    backend = self._ready()
    assert self._helpers is not None  # made in setup, as the backend
    self._pending.append((time.perf_counter(),
                          self._helpers.submit(backend.prepare, batch),
                          batch))
    while len(self._pending) >= backend.in_flight:
      yield from self._finish(self._pending.popleft())

  def _finish(self, submitted: _Submitted) -> Iterator:
    submitted_at, prepared, batch = submitted
    started = time.perf_counter()
    try:
      result = self._ready().finish(prepared.result())
    except Exception as e:  # pylint: disable=broad-except
      # The backend turns what it expects into error lines; anything else
      # (a bug, a lost server) costs this batch's images an error line
      # each, like RunInference's dead letters, and the run goes on.
      logging.exception('A GPU batch failed')
      self._model_metrics.batch_failed()
      result = device_batches.failed(batch, e)
    done = time.perf_counter()
    if result.timings is not None:
      images = len(result.features) + sum(
          error.stage == 'inference' for error in result.errors)
      self._decoded.inc(images)
      self._on_device.inc(result.on_device)
      for name, seconds in result.timings._asdict().items():
        self._step_micros[name].update(int(seconds * 1e6))
      self._step_micros['wait'].update(int((done - started) * 1e6))
      # As RunInference counts a batch: its images, the model's input
      # bytes (uint8 pixels), its time from submission to results.
      side = self._decode_config.image_size
      self._model_metrics.batch_done(len(result.features),
                                     len(result.features) * side * side * 3,
                                     int((done - submitted_at) * 1e6))
    yield from result.features
    yield from self._errors(result.errors)

  def _errors(self, errors: List[ErrorRecord]) -> Iterator[Any]:
    for error in errors:
      if error.stage == 'inference':
        self._inference_errors.inc()
      else:
        self._decode_errors.inc()
      yield beam.pvalue.TaggedOutput(metrics.ERRORS_TAG, error)


class ExtractOnDevice(beam.PTransform):
  """Decodes and runs VGG16 on GPUs.

  Returns a dict with ``features`` (``FeatureRecord``) and ``errors``
  (``ErrorRecord``), like ``DecodeImages`` + ``RunModel``.
  """

  def __init__(self, model_config: models.ModelConfig,
               decode_config: imaging.DecodeConfig):
    super().__init__()
    self.model_config = model_config
    self.decode_config = decode_config

  def expand(self, images):
    outputs = images | 'DecodeAndExtract' >> beam.ParDo(
        _ExtractOnDeviceFn(self.model_config, self.decode_config)
    ).with_outputs(metrics.ERRORS_TAG, main='features')
    return {'features': outputs.features, 'errors': outputs[metrics.ERRORS_TAG]}
