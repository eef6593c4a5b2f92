"""Parse, check, build and run a featurize job."""
import contextlib
import dataclasses
import datetime
import json
import os
import socket
import uuid
from typing import NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

from pipeline import job_metrics, progress_line
from pipeline.build import build_pipeline
from pipeline.config import JobConfig
from pipeline.options import local_workers, runs_locally
from transforms.coordination import output_lock
from transforms.extract import backend, vgg16
from transforms.extract.gpu import mps, placement
from transforms.write.output_files import (MANIFEST_FILE, SUCCESS_FILE,
                                           RunRefused, TooManyErrors,
                                           error_share_problem,
                                           remove_leftovers)


class JobFailed(Exception):
  """The runner reports that the job failed; the message says why."""


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
  if weights == 'imagenet':
    # Workers use their own Keras cache or download; where this machine has
    # the file cached, the manifest can still name exactly what it holds.
    cached = vgg16.keras_cache_path(job.model.official_weights_file)
    if os.path.isfile(cached):
      digest, size = vgg16.inspect_weight_file(cached)
  elif weights != 'random':
    digest, size = vgg16.inspect_weight_file(weights)
  return dataclasses.replace(job, model=dataclasses.replace(
      job.model, weights_sha256=digest, weights_size=size))


class OutputLock(NamedTuple):
  """How a run takes its output folder's lock (``output_lock``).

  Attributes:
    holder: This run's id in the lock.
    watch: The launcher awaits a job that runs in its own process tree.
    timeout_s: Age after which another run's lock counts as stale.
    break_lock: Take the lock over whatever its age.
  """
  holder: str
  watch: bool
  timeout_s: float = output_lock.DEFAULT_TIMEOUT_S
  break_lock: bool = False


def start_job(job: JobConfig, beam_args: Sequence[str],
              lock: Optional[OutputLock] = None
              ) -> beam.runners.runner.PipelineResult:
  """Checks, builds and starts a job; returns without waiting for it.

  A local GPU run with several worker processes has them share the GPU
  through NVIDIA MPS for the run (``mps.sharing``) and says so.

  With ``lock``, the output folder's lock is taken after the checks, what
  unfinished runs left in the folder is deleted, and the job's last step
  releases the lock (as does this function if the start fails).

  With Beam's ``--dry_run`` (DataflowRunner), the job is built down to the
  runner's job description, which the result's ``job`` holds, and nothing
  is submitted.
  """
  options = PipelineOptions(list(beam_args))
  gpu_sharing = []  # contexts the local run's workers start inside
  if job.model.device == 'gpu' and runs_locally(beam_args):
    processes = local_worker_processes(options)
    gpus = [] if job.model.large_model else placement.machine_gpus(
        os.environ)
    # Several GPUs: each worker process takes one, P/G a GPU (placement).
    per_gpu = placement.processes_per_gpu(processes, len(gpus))
    backend.share_gpus(processes, one_owner=job.model.large_model,
                       per_gpu=per_gpu)
    if not job.model.large_model:  # one server process owns the GPU
      say = lambda line: print(f'featurize: {line}', flush=True)
      if len(gpus) > 1 and processes > 1:
        say(f'{processes} worker processes over {len(gpus)} GPUs, at most '
            f'{per_gpu} a GPU')
      # Local runners run the whole job in run(), inside these.
      gpu_sharing = [placement.spread(gpus), mps.sharing(per_gpu, say=say)]
  # The launcher's own file access (preflight, manifest) uses the same
  # filesystem options as the workers (credentials, --no_auth, ...).
  FileSystems.set_options(options)
  job = preflight(job)
  if lock:
    output_lock.acquire(job.output.directory, lock.holder, lock.timeout_s,
                        lock.break_lock, job='run', watch=lock.watch)
  try:
    if lock:
      remove_leftovers(job.output)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, job, lock.holder if lock else None)
    with contextlib.ExitStack() as stack:
      for context in gpu_sharing:
        stack.enter_context(context)
      return pipeline.run()
  except BaseException:
    if lock:
      output_lock.release(job.output.directory, lock.holder)
    raise


def run_job(job: JobConfig, beam_args: Sequence[str], wait: bool = True,
            lock_timeout_s: float = output_lock.DEFAULT_TIMEOUT_S,
            break_lock: bool = False,
            show_progress: bool = False) -> RunSummary:
  """Runs a parsed job and, when awaited, reads back its manifest.

  The run holds its output folder's lock from launch to publication: a
  second run into the same folder is refused while the first works. A
  local run shows its progress line with ``show_progress``.
  """
  launched = datetime.datetime.now(datetime.timezone.utc).replace(
      microsecond=0)
  dry_run = PipelineOptions(list(beam_args)).view_as(TestOptions).dry_run
  local = runs_locally(beam_args)
  lock = None if dry_run else OutputLock(
      f'{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}',
      watch=wait and local, timeout_s=lock_timeout_s, break_lock=break_lock)
  watching = (progress_line.ProgressLine(count_shards(job.read.pattern),
                                    show=show_progress)
              if local and wait else contextlib.nullcontext())
  try:
    with watching:
      result = start_job(job, beam_args, lock)
  except RuntimeError as e:  # Local runners run the whole job in run().
    raise_too_many_errors(job, launched)
    raise JobFailed(failure_line(str(e))) from e
  job_id = getattr(result, 'job_id', None)  # a method on Dataflow's result
  job_id = job_id() if callable(job_id) else job_id
  if dry_run:
    return RunSummary(job.output.directory, None, state='DRY_RUN')
  if not wait:
    return RunSummary(job.output.directory, None, state='SUBMITTED',
                      job_id=job_id)
  try:
    result.wait_until_finish()
  except (RunRefused, TooManyErrors):
    raise
  except RuntimeError as e:  # How portable runners report a failed job.
    raise_too_many_errors(job, launched)
    raise JobFailed(failure_line(str(e))) from e
  finally:
    # The job's last step releases the lock once it has published; this
    # releases it when the job failed before that (a no-op otherwise).
    output_lock.release(job.output.directory, lock.holder)
  with FileSystems.open(job.output.path(MANIFEST_FILE)) as f:
    manifest = json.load(f)
  metrics = job_metrics.from_result(result)
  elapsed = (datetime.datetime.now(datetime.timezone.utc)
             - launched).total_seconds()
  return RunSummary(job.output.directory, manifest,
                    metrics.model_loads if metrics else None, job_id=job_id,
                    metrics=metrics, elapsed_s=elapsed,
                    first_record_s=getattr(watching, 'first_record_s', None))


def local_worker_processes(options: PipelineOptions) -> int:
  """How many SDK worker processes a local runner starts (one unless
  ``--direct_running_mode=multi_processing``)."""
  return local_workers(options)[0]


def count_shards(pattern: str) -> int:
  """How many files the input pattern matches now."""
  return len(FileSystems.match([pattern])[0].metadata_list)


# Runner messages that say little on their own, and what they mean.
_EXPLAINED = {
    # The FnApiRunner's gRPC channel to a worker process broke: the worker
    # ended mid-bundle (killed, or out of memory). It has no bundle retries.
    'Channel closed prematurely': 'a Beam worker process ended in the '
                                  'middle of its work (killed, or out of '
                                  'memory?)',
}


def failure_line(message: str, limit: int = 600) -> str:
  """The first line of a runner's failure message, cut to ``limit``.

  A portable runner's message starts with what failed (``Pipeline ID
  failed in state FAILED: <cause>``) and goes on with stack traces. A
  worker process's error on a local runner is a Python traceback as text,
  whose last unindented line is the exception: that line is the cause.
  """
  lines = [line.strip() for line in message.splitlines() if line.strip()]
  first = lines[0] if lines else 'the job failed (no message from the runner)'
  if first.startswith('Traceback (most recent call last)'):
    causes = [line.strip() for line in message.splitlines()
              if line.strip() and not line[0].isspace() and
              not line.startswith(('Traceback (most recent call last)',
                                   'During handling of the above',
                                   'The above exception was'))]
    first = causes[-1] if causes else first
  for known, meaning in _EXPLAINED.items():
    if known in first:
      first = f'{meaning}: {first}'
  return first if len(first) <= limit else first[:limit - 3] + '...'


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


