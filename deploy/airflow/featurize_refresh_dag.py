"""Nightly ``featurize refresh`` of one feature dataset, as an Airflow DAG.

DAG ``featurize_refresh``: every night at 02:00 UTC it brings the versioned
feature dataset at ``dataset`` up to date with the shards ``input`` matches
(only new and changed shards are read; see docs/refresh.md).
``runner`` picks where the refresh runs:

* ``local``: the ``featurize`` executable on the Airflow worker
  (``featurize refresh --input ... --dataset ...`` on Beam's local runner,
  or on any runner named in ``extra_flags``);
* ``dataflow``: a launch of the featurize Flex Template, awaited until the
  Dataflow job has finished (the template's entry point runs
  ``featurize refresh`` when its parameters include ``dataset``).

Install (Airflow 3.3, Python 3.11):

* Airflow with the providers pinned in ``deploy/airflow/requirements.txt``:
  ``apache-airflow-providers-standard`` (the tasks),
  ``apache-airflow-providers-google`` (the Dataflow operator, imported
  even when only ``local`` is used) and
  ``apache-airflow-providers-apache-beam`` (which that operator imports).
  On Cloud Composer, add whichever the image lacks as PyPI packages of
  the environment.
* Copy this file into the DAGs folder (``$AIRFLOW_HOME/dags``, or
  ``gcloud composer environments storage dags import --environment ENV
  --location REGION --source deploy/airflow/featurize_refresh_dag.py``),
  then edit ``DEFAULTS`` below: the nightly run uses them. A manual run
  may override any parameter (``airflow dags trigger featurize_refresh
  --conf '{"keep": 7}'``, or the trigger form).
* For ``local``: install featurize in a virtualenv of its own on every
  worker (its TensorFlow and Beam must not share Airflow's environment)
  and point ``featurize`` at its executable, e.g.
  ``/opt/featurize/.venv/bin/featurize``. The DAG runs that executable; it
  never imports featurize.
* For ``dataflow``: build the refresh Flex Template's spec file from
  ``run_configs/flex_template_refresh_metadata.json`` (docs/dataflow.md),
  set ``template`` to it, and give the Airflow connection
  ``google_cloud_default`` an identity that can launch Dataflow jobs in
  ``project``.

Two refreshes of one dataset must not overlap: ``max_active_runs=1`` keeps
Airflow from starting a second run, and featurize's own lock
(``ROOT/.lock``) refuses one started elsewhere.
"""
import datetime
import shlex
import shutil
import subprocess
from typing import Any, Dict, List, Mapping, Optional

from airflow.providers.google.cloud.operators.dataflow import (
    DataflowStartFlexTemplateOperator)
from airflow.sdk import DAG, Param, task

PLACEHOLDER = 'YOUR-'
# The nightly run's settings: edit them when you install the DAG.
DEFAULTS = {
    'runner': 'local',
    'input': 'gs://YOUR-BUCKET/shards/*.tfrecord',
    'dataset': 'gs://YOUR-BUCKET/features',
    'weights': 'imagenet',
    # The featurize executable in its own virtualenv, by its full path: an
    # Airflow worker's PATH rarely holds it.
    'featurize': '/YOUR-VENV/bin/featurize',
    'project': 'YOUR-PROJECT',
    'region': 'us-central1',
    'template': 'gs://YOUR-BUCKET/templates/featurize-refresh.json',
    'temp_location': 'gs://YOUR-BUCKET/featurize/temp',
}
# featurize's own choices (transforms/extract/vgg16.py);
# tests/system/test_airflow_dag.py checks that they still agree.
LAYERS = (
    'block1_conv1', 'block1_conv2', 'block1_pool',
    'block2_conv1', 'block2_conv2', 'block2_pool',
    'block3_conv1', 'block3_conv2', 'block3_conv3', 'block3_pool',
    'block4_conv1', 'block4_conv2', 'block4_conv3', 'block4_pool',
    'block5_conv1', 'block5_conv2', 'block5_conv3', 'block5_pool',
    'flatten', 'fc1', 'fc2', 'predictions',
)
POOLINGS = ('none', 'avg', 'max')
PRECISIONS = ('float32', 'bfloat16')
# The job flags both runners pass, in this order.
JOB_FLAGS = ('input', 'dataset', 'weights', 'layer', 'pooling', 'precision')
# What each runner needs set to something other than a placeholder.
REQUIRED = {'local': ('input', 'dataset', 'featurize'),
            'dataflow': ('input', 'dataset', 'project', 'region', 'template',
                         'temp_location')}


def placeholders(params: Mapping[str, Any]) -> List[str]:
  """The settings ``params['runner']`` needs that are still placeholders."""
  return [name for name in REQUIRED[params['runner']]
          if not params[name] or PLACEHOLDER in str(params[name])]


def featurize_missing(params: Mapping[str, Any]) -> Optional[str]:
  """Why a local refresh cannot run ``params['featurize']`` on this
  worker, or None (and None for ``runner=dataflow``)."""
  if params['runner'] != 'local' or shutil.which(params['featurize']):
    return None
  return (f'featurize {params["featurize"]!r} is not an executable on this '
          'worker: set featurize to its full path in featurize\'s own '
          'virtualenv (e.g. /opt/featurize/.venv/bin/featurize)')


def featurize_argv(params: Mapping[str, Any]) -> List[str]:
  """The ``featurize refresh`` command line of a local refresh.

  Args:
    params: The run's parameters.

  Returns:
    The argv list: one element per flag and value, never parsed by a shell.
  """
  argv = [params['featurize'], 'refresh']
  for name in JOB_FLAGS:
    argv += [f'--{name}', str(params[name])]
  if params['keep'] is not None:
    argv += ['--keep', str(params['keep'])]
  return argv + list(params['extra_flags'])


def flex_template_body(params: Mapping[str, Any], date: str) -> Dict:
  """The Flex Template launch request of a Dataflow refresh.

  Args:
    params: The run's parameters.
    date: The run's date, ``YYYYMMDD``, for the job name.

  Returns:
    The ``projects.locations.flexTemplates.launch`` request body. Template
    parameters are strings named like the refresh flags; ``keep`` and the
    service account are left out when unset.
  """
  parameters = {name: str(params[name]) for name in JOB_FLAGS}
  if params['keep'] is not None:
    parameters['keep'] = str(params['keep'])
  environment = {'tempLocation': params['temp_location']}
  if params['service_account_email']:
    environment['serviceAccountEmail'] = params['service_account_email']
  return {'launchParameter': {
      # Dataflow job names are lowercase letters, digits and dashes; the
      # operator appends a unique suffix.
      'jobName': f'featurize-refresh-{date}',
      'containerSpecGcsPath': params['template'],
      'parameters': parameters,
      'environment': environment,
  }}


def _list_of(names) -> str:
  """A JSON-schema pattern: one of ``names``, or several joined by ','."""
  one = '(' + '|'.join(names) + ')'
  return f'^{one}(,{one})*$'


def _text(default, description, **schema) -> Param:
  return Param(default, type='string', description=description, **schema)


with DAG(
    dag_id='featurize_refresh',
    description='Nightly featurize refresh of a versioned feature dataset',
    schedule='0 2 * * *',
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=['featurize'],
    # The Flex Template body is built by a macro and must stay a dict
    # (a string-rendering template cannot leave out ``keep``). Only that
    # operator uses templates in this DAG.
    render_template_as_native_obj=True,
    user_defined_macros={'flex_template_body': flex_template_body},
    params={
        'runner': _text(DEFAULTS['runner'], 'Where the refresh runs.',
                        enum=['local', 'dataflow']),
        'input': _text(DEFAULTS['input'], 'Shard pattern, local or gs://.',
                       minLength=1),
        'dataset': _text(DEFAULTS['dataset'],
                         'Root of the versioned feature dataset.',
                         minLength=1),
        'weights': _text(DEFAULTS['weights'], 'imagenet, random, or a path '
                         '/ gs:// URL of a Keras VGG16 weight file.',
                         minLength=1),
        'layer': _text('block5_pool', 'VGG16 layer whose output is the '
                       'feature, or several joined by "," (one pass gives '
                       'each).', pattern=_list_of(LAYERS)),
        'pooling': _text('none', 'Pooling over the spatial axes: one value, '
                         'or one per layer joined by ",".',
                         pattern=_list_of(POOLINGS)),
        'precision': _text('float32', 'bfloat16 is faster on CPUs with AMX.',
                           enum=list(PRECISIONS)),
        'keep': Param(None, type=['null', 'integer'], minimum=1,
                      description='Keep the newest N versions (null: all).'),
        'featurize': _text(DEFAULTS['featurize'], 'local: the featurize '
                           'executable (of its own virtualenv).',
                           minLength=1),
        'extra_flags': Param([], type='array', items={'type': 'string'},
                             description='local: more flags of featurize '
                             'refresh or Beam, one list item each.'),
        'project': _text(DEFAULTS['project'], 'dataflow: the GCP project.'),
        'region': _text(DEFAULTS['region'], 'dataflow: the region.'),
        'template': _text(DEFAULTS['template'], 'dataflow: gs:// path of the '
                          'refresh Flex Template spec file.'),
        'temp_location': _text(DEFAULTS['temp_location'],
                               'dataflow: gs:// folder for temporary files.'),
        'service_account_email': Param(
            None, type=['null', 'string'],
            description='dataflow: the workers\' service account.'),
    },
) as dag:

  @task.branch
  def choose_runner(params=None) -> str:
    """Fails at once on unset settings, then picks the runner's task."""
    unset = placeholders(params)
    if unset:
      raise ValueError(f'set {", ".join(unset)} (the DAG\'s DEFAULTS or the '
                       'run\'s conf): placeholders cannot be refreshed')
    missing = featurize_missing(params)
    if missing:
      raise ValueError(missing)
    return f'refresh_{params["runner"]}'

  # A task with an argv list rather than a BashOperator: no shell ever
  # parses the values (a pattern like 'shards/*' or a path with quotes
  # reaches featurize as it is), and the optional --keep and extra flags
  # need no shell quoting logic.
  @task
  def refresh_local(params=None) -> None:
    """Runs ``featurize refresh``; its exit status fails the task."""
    missing = featurize_missing(params)  # this worker may be another
    if missing:
      raise ValueError(missing)
    argv = featurize_argv(params)
    print('running:', shlex.join(argv), flush=True)
    # featurize's output goes straight to the task's log.
    subprocess.run(argv, check=True)

  # The run's date rather than {{ ds_nodash }}: Airflow 3 leaves that out
  # of runs triggered without a logical date.
  refresh_dataflow = DataflowStartFlexTemplateOperator(
      task_id='refresh_dataflow',
      body="{{ flex_template_body(params, (dag_run.logical_date or "
           "dag_run.run_after).strftime('%Y%m%d')) }}",
      location='{{ params.region }}',
      project_id='{{ params.project }}',
      wait_until_finished=True,
  )

  choose_runner() >> [refresh_local(), refresh_dataflow]
