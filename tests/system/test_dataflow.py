"""The Dataflow job, built offline from run_configs/dataflow.yaml.

Beam's DataflowRunner with ``--dry_run`` translates the pipeline into the
job it would submit (the portable pipeline proto and the job description)
and stops before the first call to Google. The input and the weights live
in the loopback GCS server, since the launcher's checks read them.
"""
import os
import tarfile

import pytest
from apache_beam.options.pipeline_options import (DebugOptions, SetupOptions,
                                                  WorkerOptions)
from apache_beam.portability.api import beam_runner_api_pb2

from pipeline import cli, options, run
from tests.support import image_zoo
from tests.support.gcs_server import BUCKET
from tests.support.paths import ROOT


CONFIG = os.path.join('run_configs', 'dataflow.yaml')
GBK = 'beam:transform:group_by_key:v1'
PARDO = 'beam:transform:pardo:v1'


def _config() -> dict:
  import yaml
  with open(os.path.join(ROOT, CONFIG)) as f:
    return yaml.safe_load(f)


@pytest.fixture(scope='module')
def dry_run_args(gcs):
  for name in ('a.jpg', 'b.jpg'):
    gcs.bucket.blob(f'dataflow-input/{name}').upload_from_string(
        image_zoo.jpeg())
  return ['--input', f'gs://{BUCKET}/dataflow-input/*.jpg', '--output',
          f'gs://{BUCKET}/dataflow-out', '--weights', 'random', '--config',
          CONFIG, '--dry_run=True']


@pytest.fixture
def job(gcs_env, dry_run_args, monkeypatch):
  """The Dataflow job that ``featurize run`` would submit."""
  monkeypatch.chdir(ROOT)  # setup_file: ./setup.py, as the README says
  parsed = options.parse_run_args(dry_run_args)
  return run.start_job(parsed.job, parsed.beam_args).job


def _feature_pcollections(pipeline) -> set:
  """PCollections that carry feature records or anything made from them.

  Starts at ExtractFeatures' outputs and follows every transform's main
  inputs (not side inputs) forward.
  """
  transforms = pipeline.components.transforms
  start = next(t for t in transforms.values()
               if t.unique_name == 'ExtractFeatures')
  reached = set(start.outputs.values())
  changed = True
  while changed:
    changed = False
    for t in transforms.values():
      if t.subtransforms:
        continue  # composites: their parts are visited
      side = set()
      if t.spec.urn == PARDO:
        payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
        side = set(payload.side_inputs)
      main = {p for name, p in t.inputs.items() if name not in side}
      if main & reached and not set(t.outputs.values()) <= reached:
        reached |= set(t.outputs.values())
        changed = True
  return reached


def test_job_has_the_featurize_transforms(job):
  transforms = job.proto_pipeline.components.transforms
  top = {t.unique_name for t in transforms.values()
         if '/' not in t.unique_name}
  assert {'ReadImageShards', 'ExtractFeatures', 'GatherErrors',
          'WriteOutputs'} <= top
  names = {t.unique_name for t in transforms.values()}
  # One extract step; on the CPU it decodes, then runs RunInference.
  assert 'ExtractFeatures/DecodeImages' in names
  assert any(n.startswith('ExtractFeatures/') and 'RunInference' in n
             for n in names)


def test_workers_run_the_custom_container(job):
  image = _config()['sdk_container_image']
  environments = job.proto_pipeline.components.environments.values()
  docker = [e for e in environments if e.urn == 'beam:env:docker:v1']
  assert docker and len(docker) == len(environments)
  for env in docker:
    payload = beam_runner_api_pb2.DockerPayload.FromString(env.payload)
    assert payload.container_image == image


def test_setup_file_is_staged_as_an_sdist_of_the_project(job):
  assert job.options.view_as(SetupOptions).setup_file == './setup.py'
  staged = {}
  for env in job.proto_pipeline.components.environments.values():
    for artifact in env.dependencies:
      role = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
          artifact.role_payload)
      path = beam_runner_api_pb2.ArtifactFilePayload.FromString(
          artifact.type_payload).path
      staged[role.staged_name] = path
  # Beam's name for the sdist that workers pip-install at start-up.
  with tarfile.open(staged['workflow.tar.gz']) as sdist:
    members = {m.split('/', 1)[1] for m in sdist.getnames() if '/' in m}
  assert {'setup.py', 'pipeline/run.py', 'pipeline/runners/flex_template.py',
          'transforms/extract/features.py',
          'transforms/extract/models/keras_build.py'} <= members


def test_worker_settings_from_the_run_config(job, dry_run_args):
  config = _config()
  parsed = options.parse_run_args(dry_run_args)
  assert parsed.job.model.large_model is config['featurize']['large_model']
  assert parsed.job.model.precision == config['featurize']['precision']
  worker = job.options.view_as(WorkerOptions)
  assert worker.machine_type == config['machine_type']
  assert job.options.view_as(
      DebugOptions).number_of_worker_harness_threads == config[
          'number_of_worker_harness_threads']
  assert 'use_runner_v2' in job.options.view_as(DebugOptions).experiments


def test_no_group_by_key_over_feature_records(job):
  pipeline = job.proto_pipeline
  transforms = pipeline.components.transforms.values()
  features = _feature_pcollections(pipeline)
  writer = [t for t in transforms if t.unique_name.startswith('WriteOutputs/')
            and not t.subtransforms and set(t.inputs.values()) & features]
  assert writer  # the walk does reach the writer, so it can see a GBK
  groupings = [t for t in transforms if t.spec.urn == GBK]
  assert groupings  # the Reshuffle of shard paths
  assert not [t.unique_name for t in groupings
              if set(t.inputs.values()) & features]


def test_cli_dry_run_submits_nothing(gcs_env, dry_run_args, monkeypatch,
                                     capsys):
  monkeypatch.chdir(ROOT)
  assert cli.main(['run', *dry_run_args]) == 0
  assert 'dry run' in capsys.readouterr().out
  assert not list(gcs_env.bucket.client.list_blobs(
      gcs_env.bucket, prefix='dataflow-out'))
