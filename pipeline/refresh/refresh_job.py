"""Plan, build and run a refresh.

The launcher lists the input shards (a file match: sizes and modification
times, no content read), plans against the latest version, prints the
plan, writes it to the refresh's staging folder, and runs the pipeline
over the new and changed shards only. The pipeline's last step publishes
the version (``publish``); when no shard needs reading (shards were only
removed), the launcher publishes it itself.
"""
import dataclasses
from typing import Callable, NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline import job_metrics, launch, run
from pipeline.build import extract_all
from pipeline.config import JobConfig, describe
from pipeline.refresh import fingerprints, publish_version as publish, versions
from pipeline.refresh.plan import Plan, StagedPlan, make_plan
from transforms.coordination import output_lock as lock
from transforms.write.outputs import WriteAndPublish


class RefreshResult(NamedTuple):
  """What a refresh did.

  Attributes:
    plan: Its plan.
    manifest: The version it published; the latest one when there was
      nothing to do; None for ``--plan-only`` on an empty dataset.
    published: Whether a new version was published.
    images_read: Images the pipeline read (its ``images_read`` metric; 0
      when no pipeline ran).
  """
  plan: Plan
  manifest: Optional[dict]
  published: bool
  images_read: int = 0


def list_shards(pattern: str) -> dict:
  """Path -> shard fingerprint of every file ``pattern`` matches now."""
  matched = FileSystems.match([pattern])[0].metadata_list
  if not matched:
    raise FileNotFoundError(f'--input {pattern!r} matches no files')
  return {m.path: fingerprints.shard_fingerprint(m) for m in matched}


def build_refresh(pipeline: beam.Pipeline, job: JobConfig, root: str,
                  staging: str):
  """read (the listed shards) -> decode -> VGG16 -> per-shard files ->
  the new version. No I/O here."""
  return (extract_all(pipeline, job)
          | 'WriteVersion' >> WriteAndPublish(
              versions.path(staging, publish.TEMP),
              publish.PublishVersionFn(root, staging), per_source=True))


def _write(path: str, data: bytes) -> None:
  with FileSystems.create(path) as f:
    f.write(data)


def refresh(job: JobConfig, beam_args: Sequence[str], plan_only: bool = False,
            lock_timeout_s: float = lock.DEFAULT_TIMEOUT_S,
            break_lock: bool = False, keep: Optional[int] = None,
            wait: bool = True,
            log: Callable[[str], None] = print,
            show_progress: bool = False) -> RefreshResult:
  """Brings the dataset at ``job.output.directory`` up to date with the
  shards ``job.read.pattern`` matches now.

  Holds the dataset's lock from before the plan until the new version is
  published (the pipeline's last step releases it; the launch does when
  the job fails). With ``keep``, the newest ``keep`` versions stay and
  files no kept version lists are deleted. Without ``wait``, it returns
  once the runner has accepted the job (``manifest`` None): the job's
  last step publishes the version and releases the lock.
  """
  root = job.output.directory
  with launch.Launch(job, beam_args, 'refresh', wait=wait,
                     show_progress=show_progress,
                     say=lambda line: log(f'featurize: {line}')) as launcher:
    job = run.with_weights_inspected(job)
    listing = list_shards(job.read.pattern)
    if not plan_only:
      launcher.hold_lock(root, lock_timeout_s, break_lock)
      # Holding the lock, whatever is staged, or past the latest version,
      # is a dead refresh's.
      publish.delete_tree(versions.path(root, versions.STAGING))
      versions.remove_unpublished(root)
    pointer = versions.read_pointer(root)
    latest = versions.read_manifest(root, pointer.version) if pointer else None
    plan = make_plan(listing, fingerprints.model_fingerprint(job), latest)
    log(f'featurize: {plan.summary()}')
    if plan_only or plan.is_noop:
      if plan.is_noop:
        log(f'featurize: {root} is up to date (version {plan.parent})')
      launcher.release_lock()
      return RefreshResult(plan, latest, False)
    staged = StagedPlan(
        version=versions.next_version(plan.parent), refresh=launcher.holder,
        parent=plan.parent, parent_pointer=pointer,
        model_fingerprint=plan.model_fingerprint,
        input_pattern=job.read.pattern, describe=describe(job),
        max_error_fraction=job.output.max_error_fraction,
        reused=plan.reused, to_process=plan.to_process, keep=keep)
    version = staged.version
    staging = versions.path(root, versions.STAGING, version)
    job = _stage(job, staged, staging)
    if not plan.to_process:
      manifest = publish.publish_version(root, staging, [], [], [])
      return _published(plan, manifest, root, version, log)
    finished = launcher.run(
        lambda pipeline: build_refresh(pipeline, job, root, staging),
        len(plan.to_process))
  if not finished.awaited:
    log(f'featurize: refresh job for version {version} submitted; '
        f'{root}/{versions.POINTER} points at it once it has finished')
    return RefreshResult(plan, None, False)
  metrics = job_metrics.from_result(finished.result)
  return _published(plan, versions.read_manifest(root, version), root,
                    version, log, metrics.images_read if metrics else 0)


def _stage(job: JobConfig, staged: StagedPlan, staging: str) -> JobConfig:
  """Writes the plan for the last step and the list of shards to read
  into the staging folder; returns the job reading only those."""
  _write(versions.path(staging, publish.PLAN_FILE),
         staged.to_json().encode())
  if not staged.to_process:
    return job
  shard_list = versions.path(staging, publish.SHARD_LIST)
  _write(shard_list, ''.join(f'{p}\n' for p in staged.to_process).encode())
  return dataclasses.replace(job, read=dataclasses.replace(
      job.read, shard_list=shard_list))


def _published(plan: Plan, manifest: dict, root: str, version: str,
               log: Callable[[str], None], read: int = 0) -> RefreshResult:
  counts = manifest['counts']
  log(f'featurize: version {version}: {counts["images_in"]} images '
      f'({counts["images_processed"]} read now), {counts["features"]} '
      f'feature records, {counts["errors"]} errors; '
      f'{root}/{versions.POINTER} points at it')
  return RefreshResult(plan, manifest, True, read)
