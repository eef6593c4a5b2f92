"""The ``featurize_refresh`` Airflow DAG, run by Airflow itself.

Airflow 3.3 from ``deploy/airflow/requirements.txt`` runs in a virtualenv
of its own (``tests/support/airflow_env.py``) on a temporary home with a sqlite
database, the DAG file copied into its DAGs folder as an install would:

* the DAG processor parses it without import errors;
* ``airflow dags test`` with runner=local runs this checkout's
  ``featurize`` executable on real photos twice, shards added in between:
  the second version reads only the new shards;
* with runner=dataflow the Flex Template operator runs with Google's
  launch call replaced by a recorder (Dataflow cannot be reached from
  here), which must get the launch request the refresh needs.
"""
import json
import os
import re
import shutil
import sys

import pytest

from pipeline.refresh import versions
from tests.support import airflow_env
from tests.support.refresh_data import IMAGES_PER_SHARD, write_shard
from transforms.extract import models

DAG_FILE = os.path.join(airflow_env.ROOT, 'deploy', 'airflow',
                        'featurize_refresh_dag.py')
DAG_ID = 'featurize_refresh'
REFRESH_METADATA = os.path.join(airflow_env.ROOT, 'run_configs',
                                'flex_template_refresh_metadata.json')
FEATURIZE = os.path.join(os.path.dirname(sys.executable), 'featurize')

# Run in the Airflow virtualenv: the DAG's settings and parameter schemas.
INSPECT = '''
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location('dag_file', sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
dag = module.dag
dataflow = dag.get_task('refresh_dataflow')
print(json.dumps({
    'defaults': module.DEFAULTS, 'values': dag.params.dump(),
    'schedule': dag.schedule, 'catchup': dag.catchup,
    'max_active_runs': dag.max_active_runs,
    'params': {name: dag.params.get_param(name).schema for name in dag.params},
    'branches': sorted(dag.get_task('choose_runner').downstream_task_ids),
    'dataflow_operator': type(dataflow).__name__,
    'wait_until_finished': dataflow.wait_until_finished,
}))
'''

# Runs ``airflow ARGS`` in-process with the Dataflow hook's launch replaced
# by a recorder of what Dataflow would have been sent (written to ARGV[1]).
LAUNCH = '''
import json, sys
from airflow.__main__ import main
from airflow.providers.google.cloud.hooks.dataflow import DataflowHook
record = sys.argv[1]

def launch(hook, body, location, project_id, **unused):
  with open(record, 'w') as f:
    json.dump({'body': body, 'location': location, 'project_id': project_id,
               'wait_until_finished': hook.wait_until_finished}, f)
  return {'id': 'job-1'}

DataflowHook.start_flex_template = launch
sys.argv = ['airflow'] + sys.argv[2:]
main()
'''


@pytest.fixture(scope='module')
def airflow(tmp_path_factory) -> airflow_env.Airflow:
  home = tmp_path_factory.mktemp('airflow-home')
  dags = home / 'dags'
  dags.mkdir()
  shutil.copy(DAG_FILE, dags)
  return airflow_env.start(str(home), str(dags))


def guide_settings() -> list:
  """The settings docs/refresh.md's table lists, in its order."""
  with open(os.path.join(airflow_env.ROOT, 'docs', 'refresh.md')) as f:
    text = f.read()
  table = text[text.index('| setting | default | what it does |'):]
  table = table[:table.index('\n\n')]
  return [name for row in table.splitlines()[2:]
          for name in re.findall(r'`(\w+)`', row.split('|')[1])]


def dags_test(airflow, date: str, conf: dict):
  result = airflow.run('dags', 'test', DAG_ID, date, '--conf',
                       json.dumps(conf))
  return result.returncode, result.stdout + result.stderr


def states(airflow, date: str) -> dict:
  return {t['task_id']: t['state'] for t in airflow.json(
      'tasks', 'states-for-dag-run', DAG_ID, date)}


def import_errors(airflow, dags) -> tuple:
  """Parses ``dags`` as the DAG processor does; its import errors."""
  on_folder = {'AIRFLOW__CORE__DAGS_FOLDER': str(dags)}
  parse = airflow.run('dag-processor', '--num-runs', '1', env=on_folder)
  assert parse.returncode == 0, parse.stderr
  errors = airflow.run('dags', 'list-import-errors', '-o', 'json',
                       env=on_folder)  # exits 1 when there are some
  return errors.returncode, json.loads(errors.stdout.strip().splitlines()[-1])


def test_the_dag_parses_and_agrees_with_featurize(airflow, tmp_path):
  dags = tmp_path / 'dags'
  dags.mkdir()
  shutil.copy(DAG_FILE, dags)
  assert import_errors(airflow, dags) == (0, [])
  listed = airflow.json('dags', 'list')
  assert [d['dag_id'] for d in listed] == [DAG_ID]
  # A copy with a missing import beside it: the check sees import errors.
  with open(DAG_FILE) as f:
    source = f.read()
  (dags / 'broken_copy.py').write_text(source.replace(
      'import subprocess', 'import subprocess, featurize_is_not_here', 1))
  status, errors = import_errors(airflow, dags)
  assert status == 1 and [e['filepath'] for e in errors] == ['broken_copy.py']
  assert 'featurize_is_not_here' in errors[0]['error']
  # A setting added to DEFAULTS that the DAG does not know is an import
  # error naming it, not a value silently ignored.
  (dags / 'broken_copy.py').write_text(source.replace(
      "    'runner': 'local',\n",
      "    'runner': 'local',\n    'max_errors': 0.2,\n", 1))
  status, errors = import_errors(airflow, dags)
  assert status == 1 and [e['filepath'] for e in errors] == ['broken_copy.py']
  assert "only in DEFAULTS: ['max_errors']" in errors[0]['error']

  inspect = airflow.run('-c', INSPECT, DAG_FILE, python=True)
  assert inspect.returncode == 0, inspect.stderr
  dag = json.loads(inspect.stdout.strip().splitlines()[-1])
  # Every setting is in DEFAULTS, and DEFAULTS is what a run gets.
  assert dag['values'] == dag['defaults']
  assert set(dag['params']) == set(dag['defaults'])
  assert guide_settings() == list(dag['defaults'])
  assert dag['schedule'] == '0 2 * * *'
  assert (dag['catchup'], dag['max_active_runs']) == (False, 1)
  params = dag['params']
  assert params['runner']['enum'] == ['local', 'dataflow']
  layers = ('block5_pool', 'conv5_block3_out', 'top_activation',
            'layer_normalization_1')
  for name, allowed in (('layer', layers), ('pooling', models.POOLINGS)):
    # One value, or several joined by ',' (several layers from one pass).
    pattern = params[name]['pattern']
    assert all(re.match(pattern, value) for value in allowed), name
    assert re.match(pattern, ','.join(allowed[-2:]))
    assert not re.match(pattern, allowed[0] + ',')
    assert not re.match(pattern, 'block5_pool avg')
  assert not re.match(params['pooling']['pattern'], 'block9_pool')
  assert re.match(params['layer']['pattern'], '')  # the model's own
  assert params['precision']['enum'] == list(models.PRECISIONS)
  assert params['keep']['type'] == ['null', 'integer']
  assert dag['branches'] == ['refresh_dataflow', 'refresh_local']
  assert dag['dataflow_operator'] == 'DataflowStartFlexTemplateOperator'
  assert dag['wait_until_finished'] is True


def test_placeholder_settings_fail_before_featurize_runs(airflow):
  status, output = dags_test(airflow, '2026-01-09', {})
  assert status == 1, output
  assert 'set input, dataset (' in output
  assert states(airflow, '2026-01-09') == {
      'choose_runner': 'failed', 'refresh_local': 'upstream_failed',
      'refresh_dataflow': 'upstream_failed'}


def test_a_featurize_that_is_not_on_the_worker_fails_at_once(airflow,
                                                             tmp_path):
  """featurize is set, but to something this worker cannot run (a bare
  name off the PATH, a mistyped path): the run says so before starting."""
  conf = {'runner': 'local', 'input': str(tmp_path / '*.tfrecord'),
          'dataset': str(tmp_path / 'features'),
          'featurize': 'featurize-not-on-this-worker'}
  status, output = dags_test(airflow, '2026-01-10', conf)
  assert status == 1, output
  assert ("featurize 'featurize-not-on-this-worker' is not an executable "
          'on this worker') in output
  assert states(airflow, '2026-01-10') == {
      'choose_runner': 'failed', 'refresh_local': 'upstream_failed',
      'refresh_dataflow': 'upstream_failed'}
  assert not os.path.exists(tmp_path / 'features')


def test_local_refreshes_read_only_the_new_shards(airflow, notop_weights,
                                                  tmp_path):
  # Quotes, spaces and $(...) in every path: no shell may parse them.
  folder = tmp_path / "in put $(touch injected) 'q'"
  shards = folder / 'shards'
  shards.mkdir(parents=True)
  weights = str(folder / os.path.basename(notop_weights))
  shutil.copy(notop_weights, weights)
  for index in (0, 1):
    write_shard(str(shards), index)
  root = str(folder / 'features')
  conf = {'runner': 'local', 'input': str(shards / '*.tfrecord'),
          'dataset': root, 'weights': weights, 'layer': 'block1_pool',
          'pooling': 'avg', 'featurize': FEATURIZE,
          'extra_flags': ['--image-size', '64', '--batch-size', '4']}

  status, output = dags_test(airflow, '2026-01-01', conf)
  assert status == 0, output[-5000:]
  assert states(airflow, '2026-01-01') == {
      'choose_runner': 'success', 'refresh_local': 'success',
      'refresh_dataflow': 'skipped'}
  first = versions.latest(root)
  assert first['version'].startswith('v000001-')
  assert os.path.isfile(versions.manifest_path(root, first['version']))
  assert first['counts']['images_processed'] == 2 * IMAGES_PER_SHARD
  # Every setting reached featurize as it was, the extra flags too.
  described = first['describe']
  assert (described['layer'], described['pooling']) == ('block1_pool', 'avg')
  assert described['weights']['source'] == weights
  assert described['input']['pattern'] == conf['input']
  assert described['preprocessing']['image_size'] == 64

  for index in (2, 3, 4):
    write_shard(str(shards), index)
  status, output = dags_test(airflow, '2026-01-02', {**conf, 'keep': 1})
  assert status == 0, output[-5000:]
  second = versions.latest(root)
  assert second['parent'] == first['version']
  counts = second['counts']
  assert counts['images_processed'] == 3 * IMAGES_PER_SHARD
  assert (counts['shards'], counts['images_in']) == (
      5, 5 * IMAGES_PER_SHARD)
  reused = [e for e in second['shards'] if e['version'] == first['version']]
  assert reused == first['shards']
  assert sorted(os.path.basename(e['path']) for e in second['shards']
                if e not in reused) == [f'part-{i:05d}.tfrecord'
                                        for i in (2, 3, 4)]
  assert versions.list_versions(root) == [second['version']]  # --keep 1
  assert not list(tmp_path.rglob('injected'))
  assert not os.path.exists(os.path.join(airflow.home, 'injected'))


@pytest.mark.parametrize('optional', [
    {'keep': 3, 'service_account_email': 'refresh@p.iam.gserviceaccount.com'},
    {'keep': None, 'service_account_email': None},
], ids=['keep-and-service-account', 'neither'])
def test_dataflow_launches_the_refresh_flex_template(airflow, tmp_path,
                                                     optional):
  date = '2026-01-05' if optional['keep'] else '2026-01-06'
  conf = {'runner': 'dataflow', 'input': 'gs://b/shards/*.tfrecord',
          'dataset': 'gs://b/features', 'weights': 'gs://b/vgg16.h5',
          'layer': 'fc2', 'precision': 'bfloat16', 'project': 'my-project',
          'region': 'europe-west4', 'template': 'gs://b/refresh.json',
          'temp_location': 'gs://b/temp', **optional}
  record = tmp_path / 'launch.json'
  # The operator's hook reads its connection before the launch call.
  result = airflow.run('-c', LAUNCH, str(record), 'dags', 'test', DAG_ID,
                       date, '--conf', json.dumps(conf), python=True,
                       env={'AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT':
                            'google-cloud-platform://'})
  assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
  assert states(airflow, date) == {
      'choose_runner': 'success', 'refresh_local': 'skipped',
      'refresh_dataflow': 'success'}
  launch = json.loads(record.read_text())
  assert (launch['location'], launch['project_id']) == ('europe-west4',
                                                        'my-project')
  assert launch['wait_until_finished'] is True
  request = launch['body']['launchParameter']
  assert re.fullmatch(r'featurize-refresh-%s-[0-9a-f]{8}' %
                      date.replace('-', ''), request.pop('jobName'))
  parameters = {'input': 'gs://b/shards/*.tfrecord',
                'dataset': 'gs://b/features', 'model': 'vgg16',
                'weights': 'gs://b/vgg16.h5',
                'layer': 'fc2', 'pooling': 'none', 'precision': 'bfloat16',
                'max_error_fraction': '0.05'}
  environment = {'tempLocation': 'gs://b/temp'}
  if optional['keep']:
    parameters['keep'] = '3'
    environment['serviceAccountEmail'] = optional['service_account_email']
  assert request == {'containerSpecGcsPath': 'gs://b/refresh.json',
                     'parameters': parameters, 'environment': environment}
  # And the refresh template takes them: each declared, each value passes
  # the template's checks, none required missing.
  with open(REFRESH_METADATA) as f:
    declared = {p['name']: p for p in json.load(f)['parameters']}
  for name, value in parameters.items():
    assert name in declared, name
    assert all(re.match(r, value) for r in declared[name].get('regexes', []))
  assert {n for n, p in declared.items() if not p['isOptional']} <= set(
      parameters)
