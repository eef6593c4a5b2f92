"""The Flex Template's metadata, entry point and container image recipe.

Docker cannot run here, so the image is checked as far as it can be without
building it: that it is Beam's SDK image of the pinned version, copies what
exists and points the launcher at the right file.
"""
import json
import os
import re

import pytest

from pipeline import options
from pipeline.refresh import versions
from pipeline.runners import flex_template
from tests.support.paths import ROOT
from tests.support.refresh_data import IMAGES_PER_SHARD, write_shard


METADATA = os.path.join(ROOT, 'run_configs', 'flex_template_metadata.json')
REFRESH_METADATA = os.path.join(ROOT, 'run_configs',
                                'flex_template_refresh_metadata.json')


def _read(*parts) -> str:
  with open(os.path.join(ROOT, *parts)) as f:
    return f.read()


def test_committed_metadata_matches_the_job_flags():
  with open(METADATA) as f:
    committed = json.load(f)
  assert committed == flex_template.metadata(), (
      'regenerate it: python -c "from pipeline import flex_template; '
      'flex_template.write_metadata(\'run_configs/flex_template_metadata'
      '.json\')"')
  names = [p['name'] for p in committed['parameters']]
  assert names[:2] == ['input', 'output']
  assert 'batch_size' in names and 'config' not in names
  required = [p['name'] for p in committed['parameters']
              if not p['isOptional']]
  assert required == ['input', 'output']


def test_committed_refresh_metadata_matches_the_refresh_flags():
  with open(REFRESH_METADATA) as f:
    committed = json.load(f)
  assert committed == flex_template.metadata('refresh'), (
      'regenerate it: python -c "from pipeline import flex_template; '
      'flex_template.write_metadata(\'run_configs/flex_template_refresh_'
      'metadata.json\', \'refresh\')"')
  by_name = {p['name']: p for p in committed['parameters']}
  assert [n for n, p in by_name.items() if not p['isOptional']] == [
      'input', 'dataset']
  assert 'output' not in by_name and 'wait' not in by_name
  assert re.match(by_name['keep']['regexes'][0], '7')
  assert not re.match(by_name['keep']['regexes'][0], 'all')
  assert by_name['plan_only']['regexes'] == ['^(true|false)$']
  # Both templates share the job flags, checked alike.
  run = {p['name']: p for p in flex_template.metadata()['parameters']}
  assert by_name['layer'] == run['layer']


@pytest.mark.system  # a whole run on the DirectRunner
def test_a_template_launch_with_a_dataset_refreshes_it(tmp_path):
  """The entry point as the launcher calls it: parameters as --name=value.

  On the local runner the launch returns once the job is done, so the
  version is published when it returns.
  """
  shards = tmp_path / 'shards'
  shards.mkdir()
  for index in range(2):
    write_shard(str(shards), index)
  root = str(tmp_path / 'dataset')
  launch = [f'--input={shards}/*.tfrecord', f'--dataset={root}',
            '--weights=random', '--layer=block2_pool', '--pooling=avg',
            '--batch_size=4', '--keep=1', '--plan_only=false',
            '--runner=FnApiRunner']
  assert flex_template.job_of(launch) == 'refresh'
  args = flex_template.template_args(
      [*launch[:2], '--break_lock=true', '--plan_only=false'])
  flags, _ = options.refresh_parser().parse_known_args(args)
  assert flags.break_lock and not flags.plan_only and not flags.wait
  assert flags.output == root
  assert flex_template.main(launch) == 0
  first = versions.latest(root)
  assert first['counts']['images_processed'] == 2 * IMAGES_PER_SHARD
  write_shard(str(shards), 2)
  assert flex_template.main(launch) == 0
  second = versions.latest(root)
  assert second['parent'] == first['version']
  assert second['counts']['images_processed'] == IMAGES_PER_SHARD
  assert second['counts']['images_in'] == 3 * IMAGES_PER_SHARD
  assert versions.list_versions(root) == [second['version']]  # --keep=1


def test_metadata_patterns_accept_defaults_and_refuse_junk():
  by_name = {p['name']: p for p in flex_template.metadata()['parameters']}
  precision = re.compile(by_name['precision']['regexes'][0])
  assert precision.match('bfloat16') and not precision.match('bf16')
  assert re.match(by_name['batch_size']['regexes'][0], '16')
  assert not re.match(by_name['batch_size']['regexes'][0], 'sixteen')
  assert re.match(by_name['max_error_fraction']['regexes'][0], '0.05')


def test_every_parameter_reaches_the_job():
  """The launcher passes each parameter as --name=value."""
  argv = flex_template.template_args([
      '--input=gs://b/in/*.tar', '--output=gs://b/out', '--batch_size=8',
      '--large_model=true', '--precision=bfloat16', '--project=p',
      '--region=europe-west4'])
  job, beam_args, wait = options.parse_run_args(argv)
  assert (job.model.batch_size, job.model.large_model,
          job.model.precision) == (8, True, 'bfloat16')
  assert job.read.pattern == 'gs://b/in/*.tar'
  assert not wait  # a template launch returns once the job is accepted
  assert '--runner=DataflowRunner' in beam_args
  assert '--project=p' in beam_args and '--region=europe-west4' in beam_args
  job, _, _ = options.parse_run_args(flex_template.template_args(
      ['--input=x', '--output=y', '--large_model=false']))
  assert not job.model.large_model
  with pytest.raises(ValueError):
    flex_template.template_args(['--large_model=yes please'])


def test_dockerfile_builds_on_the_pinned_beam_sdk_image():
  dockerfile = _read('Dockerfile')
  beam_pin = re.search(r"'apache-beam\[gcp\]==([\d.]+)'",
                       _read('setup.py')).group(1)
  python = re.search(r"python_requires='>=(\d+\.\d+)",
                     _read('setup.py')).group(1)
  assert f'ARG BEAM_VERSION={beam_pin}\n' in dockerfile
  assert f'ARG PYTHON_VERSION={python}\n' in dockerfile
  assert ('FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}'
          in dockerfile)
  assert 'python' + python.replace('.', '') + '-template-launcher' in (
      dockerfile)
  # The entry point is the base image's own: Beam's worker boot program.
  entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]$', dockerfile, re.M).group(1)
  assert entry == '/opt/apache/beam/boot'



def test_dockerfile_copies_what_exists_and_launches_the_entry_point():
  dockerfile = _read('Dockerfile')
  workdir = re.search(r'^WORKDIR (\S+)$', dockerfile, re.M).group(1)
  ignore = _read('.dockerignore').split()
  for line in re.findall(r'^COPY (?!--from)(.+)$', dockerfile, re.M):
    *sources, _ = line.split()
    for source in sources:
      assert os.path.exists(os.path.join(ROOT, source)), source
      assert f'!{source.rstrip("/")}' in [i.rstrip('/') for i in ignore]
  entry = re.search(r'FLEX_TEMPLATE_PYTHON_PY_FILE=(\S+)', dockerfile).group(1)
  assert entry.startswith(workdir + '/')
  assert os.path.relpath(entry, workdir) == os.path.relpath(
      flex_template.__file__, ROOT)
