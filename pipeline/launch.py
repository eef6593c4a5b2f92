"""One launch for every job featurize starts: ``run`` and ``refresh``.

A ``Launch``:

1. points this process's file access at the job's filesystem options
   (credentials, ``--no_auth``, ...), as the workers' will be;
2. takes the output's lock when asked (``hold_lock``); the job's last
   step releases it once it has published, and the launch does when the
   job fails or never starts;
3. for a local ``--device gpu`` job, sets this machine up for the worker
   processes (``pipeline/runners/local_gpu``);
4. shows the progress line of a local job it waits for;
5. runs the pipeline (a local runner runs the whole job there) or submits
   it, and waits for it unless told not to;
6. turns a runner's failure into ``JobFailed`` and its one line.

``pipeline/run.py`` (``featurize run``) and ``pipeline/refresh/
refresh_job.py`` (``featurize refresh``) do what is their own (checks,
the plan, reading the result back) around it.
"""
import contextlib
import datetime
import os
import socket
import time
import uuid
from typing import Callable, ContextManager, NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

from pipeline import progress_line
from pipeline.config import JobConfig
from pipeline.topology import local_workers, runs_locally
from pipeline.runners.local_gpu import sharing
from transforms.coordination import output_lock
from transforms.write.output_files import RunRefused, TooManyErrors


class JobFailed(Exception):
  """The runner reports that the job failed; the message says why."""


class Finished(NamedTuple):
  """What became of a launched job.

  Attributes:
    result: The runner's ``PipelineResult``.
    awaited: Whether the launch waited for the job to finish (it has,
      then); False for a job only submitted.
    elapsed_s: Seconds from the launch to the job's end, when awaited.
    first_record_s: Seconds from the launch to the first image written,
      where the job ran locally and wrote one.
  """
  result: beam.runners.runner.PipelineResult
  awaited: bool
  elapsed_s: Optional[float] = None
  first_record_s: Optional[float] = None

  @property
  def job_id(self) -> Optional[str]:
    """The runner's id of the job, where it has one (Dataflow)."""
    job_id = getattr(self.result, 'job_id', None)  # a method on Dataflow's
    return job_id() if callable(job_id) else job_id


class Launch:
  """One job's launch; a context that releases the lock it took when
  the body fails.

  Args:
    job: The job's configuration.
    beam_args: Its Beam options.
    kind: What the job is (``run``, ``refresh``): named in its lock.
    wait: Wait for the job to finish (else return once it is submitted).
    show_progress: Show the progress line of a local job.
    say: Prints a line for the user (the machine's set-up).
  """

  def __init__(self, job: JobConfig, beam_args: Sequence[str], kind: str,
               wait: bool = True, show_progress: bool = False,
               say: Callable[[str], None] = lambda line: print(
                   f'featurize: {line}', flush=True)):
    self.job = job
    self.kind = kind
    self.wait = wait
    self.show_progress = show_progress
    self.options = PipelineOptions(list(beam_args))
    self.local = runs_locally(beam_args)
    self.dry_run = bool(self.options.view_as(TestOptions).dry_run)
    self.holder = (f'{socket.gethostname()}-{os.getpid()}-'
                   f'{uuid.uuid4().hex[:8]}')
    self.launched = datetime.datetime.now(datetime.timezone.utc).replace(
        microsecond=0)
    self._started = time.monotonic()
    self._say = say
    self._locked: Optional[str] = None
    # The launcher's own file access (checks, plans, manifests) uses the
    # same filesystem options as the workers.
    FileSystems.set_options(self.options)

  def __enter__(self) -> 'Launch':
    return self

  def __exit__(self, kind, error, traceback) -> None:
    if error is not None:
      self.release_lock()

  @property
  def lock_holder(self) -> Optional[str]:
    """This launch's id in the lock it holds (for the job's last step to
    release it), or None."""
    return self.holder if self._locked else None

  def hold_lock(self, directory: str,
                timeout_s: float = output_lock.DEFAULT_TIMEOUT_S,
                break_lock: bool = False) -> None:
    """Takes ``directory``'s lock (``output_lock``) for this job; nothing
    for a dry run, which writes nothing.

    Raises:
      RunRefused: another job holds it.
    """
    if self.dry_run:
      return
    output_lock.acquire(directory, self.holder, timeout_s, break_lock,
                        job=self.kind, watch=self.wait and self.local)
    self._locked = directory

  def release_lock(self) -> None:
    """Releases the lock this launch took, if any (a no-op where the job's
    last step already has)."""
    if self._locked:
      output_lock.release(self._locked, self.holder)
      self._locked = None

  def run(self, build: Callable[[beam.Pipeline], object], shards: int,
          explain: Callable[[], None] = lambda: None) -> Finished:
    """Builds the job with ``build(pipeline)`` and runs or submits it.

    Args:
      build: Adds the job's steps to the pipeline (no I/O).
      shards: Input files the job reads, for the progress line.
      explain: Called when the runner reports a failure, before it becomes
        ``JobFailed``: raises a clearer error where the output tells one
        (a manifest that says too many images failed).

    Raises:
      JobFailed: the runner reports that the job failed.
    """
    pipeline = beam.Pipeline(options=self.options)
    build(pipeline)
    watching = (progress_line.ProgressLine(shards, show=self.show_progress)
                if self.local and self.wait else contextlib.nullcontext())
    progress_from = time.monotonic() - self._started
    try:
      try:
        with watching, self._machine():
          result = pipeline.run()  # the whole job, on a local runner
        if not self.wait or self.dry_run:  # a dry run has nothing to await
          return Finished(result, awaited=False)
        result.wait_until_finish()
      except (RunRefused, TooManyErrors):
        raise
      except RuntimeError as e:  # how runners report a failed job
        explain()
        raise JobFailed(failure_line(str(e))) from e
    finally:
      if self.wait:
        # The job's last step releases the lock once it has published;
        # this releases it when the job failed before that.
        self.release_lock()
    first = getattr(watching, 'first_record_s', None)
    return Finished(result, True, time.monotonic() - self._started,
                    None if first is None else progress_from + first)

  def _machine(self) -> ContextManager[None]:
    """This machine, set up for a local GPU job's worker processes."""
    if self.job.model.device != 'gpu' or not self.local:
      return contextlib.nullcontext()
    return sharing.for_run(local_workers(self.options)[0],
                           self.job.model.large_model, self._say)


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
