"""Beam's metrics of a finished job, as one summary.

The same counters and distributions show in Dataflow's and Flink's UIs
(``transforms/metrics.py`` names them all);
``featurize run`` prints this summary of them at the end.
"""
import logging
from typing import Dict, NamedTuple, Optional, Tuple

import apache_beam as beam

from transforms import metrics

STAGES = tuple(metrics.STAGE_ERRORS)


class JobMetrics(NamedTuple):
  """What the job's steps counted and timed, summed over workers.

  Attributes:
    images_read: Images read from the shards.
    images_decoded: Images decoded and resized.
    images_featurized: Images that went through VGG16.
    features_written: Feature records written.
    error_lines_written: Error lines written.
    errors_by_stage: Error lines by the stage that failed.
    model_loads: Times VGG16 was loaded.
    batches: Model calls.
    mean_batch_size: Images per model call.
    mean_decode_ms: Decode and resize time of one image.
    mean_batch_ms: Time of one model call.
    micros_per_image: Time an image spent reading and writing
      (``read``, ``features_write``, ``errors_write``), in microseconds.
    gpu_step_ms: On the GPU path, the host's mean time a batch in each
      step (``transforms/extract/gpu/device_batches.Timings``, and
      ``wait``: for the device's results); empty on the CPU path.
    gpu_routes: On the GPU path, images by the decoder the header screen
      chose (``transforms/extract/gpu/routing.CATEGORIES``: ``device`` for
      nvJPEG, the others for the CPU decoder); empty on the CPU path.
  """
  images_read: int
  images_decoded: int
  images_featurized: int
  features_written: int
  error_lines_written: int
  errors_by_stage: Dict[str, int]
  model_loads: int
  batches: int
  mean_batch_size: Optional[float]
  mean_decode_ms: Optional[float]
  mean_batch_ms: Optional[float]
  gpu_step_ms: Dict[str, float] = {}
  micros_per_image: Dict[str, float] = {}
  gpu_routes: Dict[str, int] = {}


def _value(result):
  return result.committed if result.committed is not None else (
      result.attempted)


def from_result(result: beam.runners.runner.PipelineResult
                ) -> Optional[JobMetrics]:
  """The job's metrics, or None where the runner reports none."""
  try:
    query = result.metrics().query()
  except Exception:  # pylint: disable=broad-except
    logging.info('This runner reports no metrics', exc_info=True)
    return None
  counters: Dict[str, int] = {}
  distributions: Dict[str, Tuple[int, int]] = {}  # name: (sum, count)
  for found in query['counters']:
    name = found.key.metric.name
    counters[name] = counters.get(name, 0) + (_value(found) or 0)
  for found in query['distributions']:
    value = _value(found)
    if value is not None and value.count:
      total, count = distributions.get(found.key.metric.name, (0, 0))
      distributions[found.key.metric.name] = (total + value.sum,
                                              count + value.count)

  def average(name: str, scale: float = 1.0) -> float:
    total, count = distributions[name]
    return total / count * scale

  def mean(name: str, scale: float = 1.0) -> Optional[float]:
    return average(name, scale) if name in distributions else None

  return JobMetrics(
      images_read=counters.get(metrics.IMAGES_READ, 0),
      images_decoded=counters.get(metrics.IMAGES_DECODED, 0),
      images_featurized=counters.get(metrics.NUM_INFERENCES, 0),
      features_written=counters.get(metrics.written('features'), 0),
      error_lines_written=counters.get(metrics.written('errors'), 0),
      errors_by_stage={stage: counters.get(name, 0)
                       for stage, name in metrics.STAGE_ERRORS.items()},
      model_loads=distributions.get(metrics.LOAD_MODEL_MILLIS, (0, 0))[1],
      batches=distributions.get(metrics.BATCH_LATENCY_MICROS, (0, 0))[1],
      mean_batch_size=mean(metrics.BATCH_SIZE),
      mean_decode_ms=mean(metrics.DECODE_MICROS, 1e-3),
      mean_batch_ms=mean(metrics.BATCH_LATENCY_MICROS, 1e-3),
      gpu_step_ms={
          name[len(metrics.GPU_STEP_PREFIX):-len(metrics.MICROS_SUFFIX)]:
          average(name, 1e-3)
          for name in sorted(distributions)
          if name.startswith(metrics.GPU_STEP_PREFIX) and
          name.endswith(metrics.MICROS_SUFFIX)},
      gpu_routes={name[len(metrics.GPU_ROUTE_PREFIX):]: value
                  for name, value in sorted(counters.items())
                  if name.startswith(metrics.GPU_ROUTE_PREFIX) and value},
      micros_per_image={
          name[:-len(metrics.MICROS_SUFFIX)]: total / max(1, counters.get(
              metrics.IMAGES_READ, 0))
          for name, total in sorted(counters.items())
          if name.endswith(metrics.MICROS_SUFFIX) and total})


def summary_lines(counted: JobMetrics) -> list:
  """What ``featurize run`` prints of the metrics."""
  errors = ', '.join(f'{stage} {counted.errors_by_stage[stage]}'
                     for stage in STAGES)
  lines = [f'images: {counted.images_read} read, {counted.images_decoded} '
           f'decoded, {counted.images_featurized} featurized; '
           f'{counted.features_written} feature records and '
           f'{counted.error_lines_written} error lines written ({errors})']
  timing = []
  if counted.mean_batch_size is not None:
    timing.append(f'{counted.batches} batches of '
                  f'{counted.mean_batch_size:.1f} images, '
                  f'{counted.mean_batch_ms:.0f} ms each')
  if counted.mean_decode_ms is not None:
    timing.append(f'decode {counted.mean_decode_ms:.1f} ms an image')
  if timing:
    lines.append('; '.join(timing))
  if counted.micros_per_image:
    lines.append('host time an image: ' + ', '.join(
        f'{name} {micros:.1f} us'
        for name, micros in counted.micros_per_image.items()))
  if counted.gpu_routes:
    lines.append(routes_line(counted.gpu_routes))
  if counted.gpu_step_ms:
    lines.append('host time a GPU batch: ' + ', '.join(
        f'{name} {ms:.1f} ms' for name, ms in counted.gpu_step_ms.items()))
  return lines


def routes_line(routes: Dict[str, int]) -> str:
  """The share of images each decoder took on the GPU path."""
  total = sum(routes.values()) or 1
  device = routes.get('device', 0)
  cpu = {name: count for name, count in routes.items() if name != 'device'}
  line = (f'decoded by nvJPEG {100 * device / total:.1f}%, by the CPU '
          f'{100 * sum(cpu.values()) / total:.1f}%')
  if cpu:
    line += ' (' + ', '.join(
        f'{name.replace("_", " ")} {100 * count / total:.1f}%'
        for name, count in sorted(cpu.items(), key=lambda kv: -kv[1])) + ')'
  return line
