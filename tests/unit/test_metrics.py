"""transforms.metrics: the names the run summary reads are the ones Beam's
RunInference makes; and ``ErrorRecord.from_exception``, the one way an
exception becomes an error line."""
from apache_beam.ml.inference.base import _MetricsCollector  # pylint: disable=protected-access

from transforms import metrics
from transforms.decode import imaging
from transforms.records import ErrorRecord


def _names(collector) -> set:
  return {value.metric_name.name for value in vars(collector).values()
          if hasattr(value, 'metric_name')}


def test_runinference_names_are_beams_own():
  made = _names(_MetricsCollector(metrics.MODEL_NAMESPACE))
  assert {metrics.NUM_INFERENCES, metrics.BATCH_SIZE,
          metrics.BATCH_LATENCY_MICROS, metrics.LOAD_MODEL_MILLIS} <= made
  collector = metrics.model_metrics()
  assert {value.metric_name.namespace for value in vars(collector).values()
          if hasattr(value, 'metric_name')} == {metrics.MODEL_NAMESPACE}
  # The GPU path's own collector makes every metric Beam's does, and no
  # other (Beam's private collector is read here, in a test, only).
  assert _names(collector) == made


def test_each_stage_counts_its_errors_under_its_own_name():
  assert metrics.STAGE_ERRORS == {'read': 'read_errors',
                                  'decode': 'decode_errors',
                                  'inference': 'inference_errors'}
  assert metrics.gpu_step_micros('resize') == 'gpu_resize_micros'
  assert metrics.gpu_route('progressive') == 'gpu_route_progressive'
  assert metrics.written('errors') == 'errors_written'


def test_an_exception_becomes_one_error_line():
  reasoned = ErrorRecord.from_exception(
      'k', 's', 'decode', imaging.ImageError('too_many_pixels', 'big'))
  assert reasoned == ErrorRecord('k', 's', 'decode', 'too_many_pixels', 'big')
  plain = ErrorRecord.from_exception('k', 's', 'inference',
                                     RuntimeError('out of memory'))
  assert (plain.error_type, plain.message) == ('RuntimeError',
                                               'out of memory')
  # An exception without text says what it is.
  assert ErrorRecord.from_exception('k', 's', 'decode',
                                    KeyError()).message == 'KeyError()'
  filed = ErrorRecord.from_exception('shard:3', 'shard', 'read',
                                     OSError('gone'), kind='unreadable_shard')
  assert (filed.error_type, filed.message) == ('unreadable_shard',
                                               'OSError: gone')
