"""``ExtractOnDevice``: encoded images in, VGG16 features out, on GPUs.

``ExtractFeatures`` runs it for ``--device gpu``, where the CPU path runs
``DecodeImages`` + ``RunVGG16``: what crosses the Beam boundary is the
encoded bytes (``ImageRecord``). The bundle's thread reads each image's
header (``routing``) and sends it to
one of two decoders: baseline JPEGs wait, encoded, for nvJPEG's batched
hardware decoder; everything else (progressive JPEGs, other formats,
CMYK...), and large JPEGs while the pool has room where ``LARGE_DRAFT``
asks for that, goes at once to a pool of threads running the CPU path's
own decoder, whose finished rows join the batch being filled
(``batching.RoutedBatcher``). A helper thread per DoFn decodes a full
batch with nvJPEG, resizes it on the device and dispatches the model
(``device_batches``) while the bundle's thread reads and writes and the
GPU runs the batch before.

One ``DeviceRuntime`` per process, through Beam's ``shared.Shared`` like
RunInference's model cache, holds one model replica and one decoder per
GPU and the CPU decoder's threads. Several processes may share one GPU
(``backend.GPU_PROCESSES_ENV``): each then takes its share of the GPU's
memory and of the machine's cores (docs/gpu.md). Each DoFn
instance sends its batches to the GPUs in turn and keeps at most two per
GPU in flight.
"""
import logging
import os
import time
from collections import deque
from concurrent import futures
from typing import Iterator, List

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils import shared

from transforms import metrics
from transforms.decode import imaging
from transforms.decode.decode_images import decode_record
from transforms.extract import backend, vgg16
from transforms.extract.gpu import (batching, device_batches, gpu_slot,
                                    routing, runtime, server)
from transforms.records import ErrorRecord, ImageRecord

# Host memory for the encoded bytes of one batch being collected.
MAX_ENCODED_BATCH_BYTES = 256 << 20
# Device memory for one batch's full-size decoded pixels, held twice (by
# nvJPEG's output and the resize's flat buffer): a batch of 256 phone
# photos would be 9 GB, of ImageNet-sized ones 0.14 GB, of the web
# profile's 0.5 GB on average. It also keeps the resize's addresses
# within int32.
MAX_DECODED_BATCH_BYTES = 1 << 30
# Batches in flight per GPU: one computing, one being prepared.
IN_FLIGHT_PER_DEVICE = 2
# CPU decodes under way or finished but not yet in a batch, per DoFn, in
# batches: bounds their memory (encoded bytes and 150 KB rows).
PENDING_CPU_BATCHES = 2
# Benchmark seam: "1" prepares batches on the bundle's own thread (no
# helper thread), to measure what the helper thread buys.
INLINE_PREPARE_ENV = 'FEATURIZE_GPU_INLINE_PREPARE'
# Helper threads preparing batches in a process that owns its GPU runtime.
# Two (measured, RESULTS.md run 12: 9,813 against 8,967 images/s with one
# at 8 processes): one batch's nvJPEG decode, which gives up the GIL,
# overlaps another's resize packing, which holds it, while a third batch
# runs the model. The variable is a benchmark seam (1: one helper thread).
PREPARE_THREADS = 2
PREPARE_THREADS_ENV = 'FEATURIZE_GPU_PREPARE_THREADS'
# The draft factor from which a baseline JPEG goes to the CPU decoder
# while it has room (``routing``'s 'large_draft' route): 0, none, keeps
# every JPEG that nvJPEG takes on the device. With the worker processes
# sharing the GPU through MPS, the device had room for them and the CPU's
# cores did not: imagenet ran at 11,768 images/s with none against 10,706
# with factor 2 and up (RESULTS.md run 18; without MPS it was +0.4% the
# other way, run 14). The variable is a benchmark seam (2: drafted by 1/2
# or more, 1: any baseline JPEG).
LARGE_DRAFT = 0
LARGE_DRAFT_ENV = 'FEATURIZE_GPU_LARGE_DRAFT'


class _ExtractOnDeviceFn(beam.DoFn):
  """Batches encoded images and runs them through ``device_batches``."""

  def __init__(self, model_config: vgg16.ModelConfig,
               decode_config: imaging.DecodeConfig):
    self._model_config = model_config
    self._decode_config = decode_config
    self._shared = shared.Shared()
    self._runtime = None  # in this process, or
    self._server = None  # a proxy of the machine's server (--large-model)
    self._batch_size = None
    self._in_flight = None
    self._prepare = None  # the helper threads' executor, made in setup
    self._batcher = None
    self._pending = deque()
    self._large_draft = LARGE_DRAFT
    self._decoded = metrics.counter(metrics.IMAGES_DECODED)
    self._decode_errors = metrics.counter(metrics.DECODE_ERRORS)
    self._inference_errors = metrics.counter(metrics.INFERENCE_ERRORS)
    self._on_device = metrics.counter(metrics.IMAGES_DECODED_ON_GPU)
    # RunInference's own metrics, through its own collector (made in
    # setup: it is not picklable), which featurize run's summary reads.
    self._model_metrics = None
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
    started = time.perf_counter()
    loaded = []
    if self._model_config.large_model:
      # One server process per machine owns the GPUs (``server``); this
      # worker process sends it batches. Its calls wait on a socket, so
      # the helper threads keep a batch per GPU slot in flight.
      self._server = server.connect(self._model_config, self._decode_config)
      self._batch_size = self._server.batch_size()
      self._in_flight = IN_FLIGHT_PER_DEVICE * self._server.replicas()
      loaded_ms = self._server.take_load_millis()
    else:
      def load():
        loaded.append(True)
        # Several GPUs: this process takes one, before CUDA starts here.
        gpu_slot.place_this_process(backend.worker_processes())
        return runtime.load_runtime(self._model_config, self._decode_config)

      self._runtime = self._shared.acquire(
          load, tag=f'{self._model_config}|{self._decode_config}')
      self._batch_size = self._runtime.model.batch_size
      self._in_flight = IN_FLIGHT_PER_DEVICE * len(self._runtime.decoders)
      loaded_ms = (int((time.perf_counter() - started) * 1e3) if loaded
                   else None)  # this thread built it; the others share it
    # Helper threads prepare batches (start_batch, or the server's
    # run_batch) while this thread reads and writes; they touch no Beam
    # state (Beam's metrics belong to the bundle's thread: they are
    # updated here).
    threads = (self._in_flight if self._server is not None else
               min(self._in_flight,
                   int(os.environ.get(PREPARE_THREADS_ENV,
                                      PREPARE_THREADS))))
    self._prepare = (_Inline() if os.environ.get(INLINE_PREPARE_ENV) else
                     futures.ThreadPoolExecutor(
                         threads, thread_name_prefix='featurize-gpu-batches',
                         initializer=runtime.name_thread,
                         initargs=('fz-gpu-batches',)))
    self._large_draft = int(os.environ.get(LARGE_DRAFT_ENV, LARGE_DRAFT))
    self._model_metrics = metrics.model_metrics()
    # Reported from process(): metrics updated in setup are lost (Beam's
    # RunInference defers its load metric the same way).
    self._load_to_report = loaded_ms
    if loaded_ms is not None:
      logging.info('GPU runtime ready in %.1f s', loaded_ms / 1e3)

  def start_bundle(self):
    runtime.name_thread('fz-bundle')  # Beam's thread: for top -H
    batch_size = self._batch_size
    self._batcher = batching.RoutedBatcher(
        batch_size, MAX_ENCODED_BATCH_BYTES, MAX_DECODED_BATCH_BYTES,
        max_pending=PENDING_CPU_BATCHES * batch_size)
    self._pending.clear()

  def process(self, image: ImageRecord) -> Iterator:
    if self._load_to_report is not None:
      # The model's byte size is not measured on this path.
      self._model_metrics.update_load_model_metrics(self._load_to_report, 0)
      self._load_to_report = None
    started = time.perf_counter()
    cpu = runtime.cpu_decoders()
    route = routing.route(image.data, self._decode_config,
                          cpu_has_room=self._large_draft > 0 and
                          cpu.has_room(),
                          min_draft_scale=self._large_draft)
    self._routes[route.category].inc()
    if route.on_device:
      self._batcher.add_device(image, route.screen)
    else:
      self._batcher.add_cpu(image, cpu.submit(
          decode_record, image, self._decode_config))
    self._route_micros.inc(int((time.perf_counter() - started) * 1e6))
    yield from self._errors(self._batcher.errors())
    for batch in self._batcher.ready():
      yield from self._start(batch)

  def finish_bundle(self) -> Iterator:
    for batch in self._batcher.drain():
      for output in self._start(batch):
        yield self._windowed(output)
    for output in self._errors(self._batcher.errors()):
      yield self._windowed(output)
    while self._pending:
      for output in self._finish(self._pending.popleft()):
        yield self._windowed(output)
    self._cpu_wait_micros.inc(int(self._batcher.waited_s * 1e6))

  @staticmethod
  def _windowed(output):
    if isinstance(output, beam.pvalue.TaggedOutput):
      return beam.pvalue.TaggedOutput(
          output.tag, GlobalWindows.windowed_value(output.value))
    return GlobalWindows.windowed_value(output)

  def teardown(self):
    if self._prepare is not None:
      self._prepare.shutdown(wait=True)

  def _start(self, batch: batching.Batch) -> Iterator:
    if self._server is not None:
      prepared = self._prepare.submit(self._server.run_batch, batch)
    else:
      replica = self._runtime.next_replica()
      prepared = self._prepare.submit(
          device_batches.start_batch, batch, self._runtime.decoders[replica],
          self._runtime.model, replica, self._decode_config)
    self._pending.append((time.perf_counter(), prepared, batch))
    while len(self._pending) >= self._in_flight:
      yield from self._finish(self._pending.popleft())

  def _finish(self, submitted) -> Iterator:
    submitted_at, prepared, batch = submitted
    started = time.perf_counter()
    try:
      if self._server is not None:
        result = prepared.result()  # re-raises what run_batch raised
      else:  # ... or start_batch
        result = device_batches.result_of(*prepared.result())
    except Exception as e:  # pylint: disable=broad-except
      # start_batch turns what it expects into error lines; anything else
      # (a bug, a lost server) costs this batch's images an error line
      # each, like RunInference's dead letters, and the run goes on.
      logging.exception('A GPU batch failed')
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
      self._model_metrics.update(len(result.features),
                                 len(result.features) * side * side * 3,
                                 int((done - submitted_at) * 1e6))
    yield from result.features
    yield from self._errors(result.errors)

  def _errors(self, errors: List[ErrorRecord]) -> Iterator:
    for error in errors:
      if error.stage == 'inference':
        self._inference_errors.inc()
      else:
        self._decode_errors.inc()
      yield beam.pvalue.TaggedOutput(metrics.ERRORS_TAG, error)


class _Inline:
  """An executor that runs the call at once, on the caller's thread."""

  def submit(self, function, *args) -> futures.Future:
    future = futures.Future()
    try:
      future.set_result(function(*args))
    except Exception as e:  # pylint: disable=broad-except
      future.set_exception(e)
    return future

  def shutdown(self, wait: bool = True) -> None:
    del wait


class ExtractOnDevice(beam.PTransform):
  """Decodes and runs VGG16 on GPUs.

  Returns a dict with ``features`` (``FeatureRecord``) and ``errors``
  (``ErrorRecord``), like ``DecodeImages`` + ``RunVGG16``.
  """

  def __init__(self, model_config: vgg16.ModelConfig,
               decode_config: imaging.DecodeConfig):
    super().__init__()
    self.model_config = model_config
    self.decode_config = decode_config

  def expand(self, images):
    outputs = images | 'DecodeAndExtract' >> beam.ParDo(
        _ExtractOnDeviceFn(self.model_config, self.decode_config)
    ).with_outputs(metrics.ERRORS_TAG, main='features')
    return {'features': outputs.features, 'errors': outputs[metrics.ERRORS_TAG]}
