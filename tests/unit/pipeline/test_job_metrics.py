"""The run summary from the metrics of a real (tiny) Beam job on the
FnApiRunner, counted under the names ``transforms/metrics.py`` gives."""
import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from pipeline import job_metrics
from transforms import metrics

COUNT, DISTRIBUTE = 'count', 'distribute'


class _Count(beam.DoFn):
  """Counts each element ``(how, namespace, name, value)`` as a step of
  the pipeline would."""

  def process(self, element):
    how, namespace, name, value = element
    if how == COUNT:
      beam.metrics.Metrics.counter(namespace, name).inc(value)
    else:
      beam.metrics.Metrics.distribution(namespace, name).update(value)


class _Batches(beam.DoFn):
  """The GPU path's model metrics (``metrics.ModelMetrics``)."""

  def setup(self):
    self._model = metrics.model_metrics()

  def process(self, element):
    if element == 'load':
      self._model.model_loaded(1200, 5000)
    else:
      images, latency_micros = element
      self._model.batch_done(images, 100, latency_micros)


def _run(*steps, batches=()) -> job_metrics.JobMetrics:
  """Runs one counting step per list of ``steps``, and the model's batches;
  returns the summary of the job's metrics."""
  with beam.Pipeline(runner=FnApiRunner()) as pipeline:
    for index, counts in enumerate(steps):
      _ = (pipeline | f'Create{index}' >> beam.Create(counts)
           | f'Count{index}' >> beam.ParDo(_Count()))
    if batches:
      _ = (pipeline | 'Batches' >> beam.Create(list(batches))
           | beam.ParDo(_Batches()))
  counted = job_metrics.from_result(pipeline.result)
  assert counted is not None
  return counted


def _ours(how, name, value):
  return (how, metrics.NAMESPACE, name, value)


# Two steps count the same names (as the CPU and GPU decoders do): the
# summary sums the counters and merges the distributions of both.
READ_AND_DECODE = [
    _ours(COUNT, metrics.IMAGES_READ, 6),
    _ours(COUNT, metrics.IMAGES_READ, 1),
    _ours(COUNT, metrics.READ_MICROS, 500),
    _ours(COUNT, metrics.IMAGES_DECODED, 5),
    _ours(COUNT, metrics.DECODE_ERRORS, 2),
    _ours(DISTRIBUTE, metrics.DECODE_MICROS, 1000),
]
DECODE_AND_WRITE = [
    _ours(COUNT, metrics.IMAGES_READ, 3),
    _ours(COUNT, metrics.IMAGES_DECODED, 3),
    _ours(DISTRIBUTE, metrics.DECODE_MICROS, 2000),
    _ours(DISTRIBUTE, metrics.DECODE_MICROS, 6000),
    _ours(COUNT, metrics.INFERENCE_ERRORS, 1),
    _ours(COUNT, metrics.written('features'), 7),
    _ours(COUNT, metrics.written('errors'), 3),
    _ours(COUNT, metrics.write_micros('features'), 70),
    _ours(COUNT, metrics.write_micros('errors'), 0),  # not shown
]


def test_a_cpu_run_sums_counters_and_averages_distributions():
  counted = _run(READ_AND_DECODE, DECODE_AND_WRITE,
                 batches=['load', (4, 20000), (3, 10000)])
  assert counted == job_metrics.JobMetrics(
      images_read=10, images_decoded=8, images_featurized=7,
      features_written=7, error_lines_written=3,
      errors_by_stage={'read': 0, 'decode': 2, 'inference': 1},
      model_loads=1, batches=2, mean_batch_size=3.5, mean_decode_ms=3.0,
      mean_batch_ms=15.0, gpu_step_ms={},
      micros_per_image={'features_write': 7.0, 'read': 50.0}, gpu_routes={})
  assert job_metrics.summary_lines(counted) == [
      'images: 10 read, 8 decoded, 7 featurized; 7 feature records and 3 '
      'error lines written (read 0, decode 2, inference 1)',
      '2 batches of 3.5 images, 15 ms each; decode 3.0 ms an image',
      'host time an image: features_write 7.0 us, read 50.0 us']


def test_a_gpu_run_tells_its_decoders_and_batch_steps():
  gpu = [_ours(COUNT, metrics.IMAGES_READ, 10),
         _ours(COUNT, metrics.gpu_route('device'), 6),
         _ours(COUNT, metrics.gpu_route('progressive'), 1),
         _ours(COUNT, metrics.gpu_route('grayscale'), 3),
         _ours(COUNT, metrics.gpu_route('cmyk'), 0),  # none: not shown
         _ours(DISTRIBUTE, metrics.gpu_step_micros('resize'), 2500),
         _ours(DISTRIBUTE, metrics.gpu_step_micros('resize'), 3500),
         _ours(DISTRIBUTE, metrics.gpu_step_micros('wait'), 1000)]
  counted = _run(gpu, batches=[(5, 4000), (5, 6000)])
  assert counted.gpu_routes == {'device': 6, 'grayscale': 3,
                                'progressive': 1}
  assert counted.gpu_step_ms == {'resize': 3.0, 'wait': 1.0}
  assert (counted.images_featurized, counted.model_loads) == (10, 0)
  assert counted.mean_decode_ms is None
  assert job_metrics.summary_lines(counted) == [
      'images: 10 read, 0 decoded, 10 featurized; 0 feature records and 0 '
      'error lines written (read 0, decode 0, inference 0)',
      '2 batches of 5.0 images, 5 ms each',
      'decoded by nvJPEG 60.0%, by the CPU 40.0% (grayscale 30.0%, '
      'progressive 10.0%)',
      'host time a GPU batch: resize 3.0 ms, wait 1.0 ms']


def test_a_run_without_timings_says_only_its_counts():
  counted = _run([_ours(COUNT, metrics.IMAGES_READ, 2),
                  _ours(COUNT, metrics.READ_ERRORS, 2),
                  _ours(COUNT, metrics.written('errors'), 2)])
  assert (counted.batches, counted.mean_batch_size,
          counted.mean_batch_ms) == (0, None, None)
  assert job_metrics.summary_lines(counted) == [
      'images: 2 read, 0 decoded, 0 featurized; 0 feature records and 2 '
      'error lines written (read 2, decode 0, inference 0)']


def test_a_runner_without_metrics_gives_no_summary():
  class NoMetrics:
    def metrics(self):
      raise NotImplementedError('this runner keeps none')

  assert job_metrics.from_result(NoMetrics()) is None


def test_routes_line_shares():
  assert job_metrics.routes_line({'device': 3, 'cmyk': 1}) == (
      'decoded by nvJPEG 75.0%, by the CPU 25.0% (cmyk 25.0%)')
  assert job_metrics.routes_line({'device': 2}) == (
      'decoded by nvJPEG 100.0%, by the CPU 0.0%')
  assert job_metrics.routes_line({'too_large': 1, 'progressive': 3}) == (
      'decoded by nvJPEG 0.0%, by the CPU 100.0% (progressive 75.0%, '
      'too large 25.0%)')
