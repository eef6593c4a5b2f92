"""``featurize run``: check, build and run a job, through the one
launch (``pipeline/launch.py``), and read back what it wrote."""
import dataclasses
import datetime
import json
import os
from typing import NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import job_metrics, launch
from pipeline.build import build_pipeline
from pipeline.config import JobConfig
from pipeline.topology import local_workers
from transforms.coordination import output_lock
from transforms.extract import models
from transforms.write.output_files import (MANIFEST_FILE, SUCCESS_FILE,
                                           RunRefused, TooManyErrors,
                                           error_share_problem,
                                           remove_leftovers)


class RunSummary(NamedTuple):
  """What a run did, read back from its manifest.

  Attributes:
    output: The output folder.
    manifest: The run's ``manifest.json``; None when the run was not
      awaited (``state`` says why).
    model_loads: How many times VGG16 was loaded, over all workers (from
      RunInference's load-latency metric), or None where the runner does
      not report metrics.
    state: ``DONE``; ``SUBMITTED`` for a run that was not awaited;
      ``DRY_RUN`` for a job that was built but not submitted.
    job_id: The runner's id of the job, where it has one (Dataflow).
    metrics: Beam's metrics of the job, where the runner reports them.
    elapsed_s: Seconds from launch to the end, for an awaited run.
    first_record_s: Seconds from launch to the first image written, where
      the job ran locally.
  """
  output: str
  manifest: Optional[dict]
  model_loads: Optional[int] = None
  state: str = 'DONE'
  job_id: Optional[str] = None
  metrics: Optional[job_metrics.JobMetrics] = None
  elapsed_s: Optional[float] = None
  first_record_s: Optional[float] = None

  @property
  def counts(self) -> dict:
    """The manifest's counts (a run that was awaited has them)."""
    if self.manifest is None:
      raise ValueError(f'a {self.state} run has no counts yet')
    return self.manifest['counts']


def preflight(job: JobConfig) -> JobConfig:
  """Checks that fail fast, before any image is read.

  * The input pattern matches at least one file.
  * The output folder does not hold a finished run.
  * A weight file exists, can be read and is an HDF5 file
    (``with_weights_inspected``).

  Returns:
    The job configuration with ``weights_sha256`` and ``weights_size``
    filled in.
  """
  matched = FileSystems.match([job.read.pattern])[0].metadata_list
  if not matched:
    raise FileNotFoundError(f'--input {job.read.pattern!r} matches no files')
  success = job.output.path(SUCCESS_FILE)
  if FileSystems.exists(success):
    raise RunRefused(
        f'{job.output.directory} already holds a finished run ({success} '
        'exists); choose a new --output or delete that folder')
  return with_weights_inspected(job)


def with_weights_inspected(job: JobConfig) -> JobConfig:
  """The job with its weight file's sha256 and size filled in.

  A weight file must exist, be readable and be an HDF5 file: its size and
  sha256 let every worker verify its copy and name exactly what was used.
  """
  weights = job.model.weights
  digest = size = None
  official = job.model.official_weights_file
  if weights == 'imagenet' and official:
    # Workers use their own Keras cache or download; where this machine has
    # the file cached, the manifest can still name exactly what it holds.
    cached = models.keras_cache_path(official)
    if os.path.isfile(cached):
      digest, size = models.inspect_weight_file(cached)
  elif weights not in ('random', ''):  # '': a model file's own
    digest, size = models.inspect_weight_file(weights)
  return dataclasses.replace(job, model=dataclasses.replace(
      job.model, weights_sha256=digest, weights_size=size))


def start_job(job: JobConfig, beam_args: Sequence[str]
              ) -> beam.runners.runner.PipelineResult:
  """Checks, builds and submits a job without its lock, and returns
  without waiting for it: for Beam's ``--dry_run`` (DataflowRunner),
  which builds the job down to the runner's job description (the
  result's ``job``) and submits nothing."""
  with launch.Launch(job, beam_args, 'run', wait=False) as launcher:
    job = preflight(job)
    return launcher.run(lambda pipeline: build_pipeline(pipeline, job, None),
                        shards=0).result


def run_job(job: JobConfig, beam_args: Sequence[str], wait: bool = True,
            lock_timeout_s: float = output_lock.DEFAULT_TIMEOUT_S,
            break_lock: bool = False,
            show_progress: bool = False) -> RunSummary:
  """Runs a parsed job and, when awaited, reads back its manifest.

  The run holds its output folder's lock from launch to publication: a
  second run into the same folder is refused while the first works. What
  unfinished runs left in the folder is deleted once the lock is held. A
  local run shows its progress line with ``show_progress``.
  """
  with launch.Launch(job, beam_args, 'run', wait=wait,
                     show_progress=show_progress) as launcher:
    job = preflight(job)
    launcher.hold_lock(job.output.directory, lock_timeout_s, break_lock)
    if launcher.lock_holder:
      remove_leftovers(job.output)
    finished = launcher.run(
        lambda pipeline: build_pipeline(pipeline, job, launcher.lock_holder),
        count_shards(job.read.pattern),
        explain=lambda: raise_too_many_errors(job, launcher.launched))
  if launcher.dry_run:
    return RunSummary(job.output.directory, None, state='DRY_RUN')
  if not finished.awaited:
    return RunSummary(job.output.directory, None, state='SUBMITTED',
                      job_id=finished.job_id)
  with FileSystems.open(job.output.path(MANIFEST_FILE)) as f:
    manifest = json.load(f)
  metrics = job_metrics.from_result(finished.result)
  return RunSummary(job.output.directory, manifest,
                    metrics.model_loads if metrics else None,
                    job_id=finished.job_id, metrics=metrics,
                    elapsed_s=finished.elapsed_s,
                    first_record_s=finished.first_record_s)


def local_worker_processes(options: PipelineOptions) -> int:
  """How many SDK worker processes a local runner starts (one unless
  ``--direct_running_mode=multi_processing``)."""
  return local_workers(options)[0]


def count_shards(pattern: str) -> int:
  """How many files the input pattern matches now."""
  return len(FileSystems.match([pattern])[0].metadata_list)


def raise_too_many_errors(job: JobConfig,
                          since: datetime.datetime) -> None:
  """Raises ``TooManyErrors`` if the failed job's manifest says so.

  The last step writes the manifest, then raises when too many images
  failed. On the DirectRunner that exception reaches the launcher as is;
  other runners report only text, so the manifest tells.
  """
  try:
    with FileSystems.open(job.output.path(MANIFEST_FILE)) as f:
      manifest = json.load(f)
  except (OSError, ValueError):  # No manifest: it failed before the end.
    return
  finished = datetime.datetime.fromisoformat(manifest.get('finished_at',
                                                          '1970-01-01'))
  if finished.tzinfo is None:
    finished = finished.replace(tzinfo=datetime.timezone.utc)
  # A manifest older than this launch is an earlier run's.
  if manifest.get('status') == 'too_many_errors' and finished >= since:
    counts = manifest['counts']
    problem = error_share_problem(counts['images_in'], counts['errors'],
                                  job.output)
    raise TooManyErrors(problem or 'too many images failed (see the '
                        'manifest)')


