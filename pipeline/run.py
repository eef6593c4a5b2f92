"""Parse, check, build and run a featurize job."""
import dataclasses
import json
import logging
import os
from typing import NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.build import build_pipeline
from pipeline.config import JobConfig
from pipeline.options import parse_run_args
from transforms import vgg16
from transforms.output_files import MANIFEST_FILE, SUCCESS_FILE, RunRefused


class RunSummary(NamedTuple):
  """What a finished run did, read back from its manifest.

  Attributes:
    output: The output folder.
    manifest: The run's ``manifest.json``.
    model_loads: How many times VGG16 was loaded, over all workers (from
      RunInference's load-latency metric), or None where the runner does
      not report metrics.
  """
  output: str
  manifest: dict
  model_loads: Optional[int] = None

  @property
  def counts(self) -> dict:
    return self.manifest['counts']


def preflight(job: JobConfig) -> JobConfig:
  """Checks that fail fast, before any image is read.

  * The input pattern matches at least one file.
  * The output folder does not hold a finished run.
  * A weight file exists; its sha256 is recorded so that every worker can
    verify its copy and the manifest can name exactly what was used.

  Returns:
    The job configuration with ``weights_sha256`` filled in.
  """
  matched = FileSystems.match([job.read.pattern])[0].metadata_list
  if not matched:
    raise FileNotFoundError(f'--input {job.read.pattern!r} matches no files')
  success = job.output.path(SUCCESS_FILE)
  if FileSystems.exists(success):
    raise RunRefused(
        f'{job.output.directory} already holds a finished run ({success} '
        'exists); choose a new --output or delete that folder')
  weights = job.model.weights
  digest = None
  if weights == 'imagenet':
    # Workers use their own Keras cache or download; where this machine has
    # the file cached, the manifest can still name exactly what it holds.
    cached = vgg16.keras_cache_path(job.model.official_weights_file)
    if os.path.isfile(cached):
      digest = vgg16.sha256_of(cached)
  elif weights != 'random':
    if not FileSystems.exists(weights):
      raise FileNotFoundError(f'--weights {weights!r}: no such file')
    digest = vgg16.sha256_of(weights)
  return dataclasses.replace(
      job, model=dataclasses.replace(job.model, weights_sha256=digest))


def run_job(job: JobConfig, beam_args: Sequence[str]) -> RunSummary:
  """Runs a parsed job to completion and reads back its manifest."""
  options = PipelineOptions(list(beam_args))
  # The launcher's own file access (preflight, manifest) uses the same
  # filesystem options as the workers (credentials, --no_auth, ...).
  FileSystems.set_options(options)
  job = preflight(job)
  pipeline = beam.Pipeline(options=options)
  build_pipeline(pipeline, job)
  result = pipeline.run()
  result.wait_until_finish()
  with FileSystems.open(job.output.path(MANIFEST_FILE)) as f:
    manifest = json.load(f)
  return RunSummary(job.output.directory, manifest, model_loads(result))


def model_loads(result: beam.runners.runner.PipelineResult) -> Optional[int]:
  """Number of model loads, summed over workers, from Beam's metrics.

  RunInference records one ``load_model_latency_milli_secs`` value per
  load, so the distribution's count is the number of loads.
  """
  try:
    query = result.metrics().query(
        MetricsFilter().with_name('load_model_latency_milli_secs'))
  except Exception:  # pylint: disable=broad-except
    logging.info('This runner reports no metrics', exc_info=True)
    return None
  total = 0
  for distribution in query['distributions']:
    value = distribution.committed or distribution.attempted
    total += value.count if value else 0
  return total


def run(argv: Optional[Sequence[str]] = None) -> RunSummary:
  """``featurize run``: parses ``argv`` and runs the job."""
  job, beam_args = parse_run_args(argv)
  logging.info('Beam options: %s', beam_args)
  return run_job(job, beam_args)
