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

Install and go live: docs/refresh.md, "Airflow", step by step (Airflow
3.3 with the providers pinned in ``deploy/airflow/requirements.txt``).
In short: copy this file into ``$AIRFLOW_HOME/dags/``, edit ``DEFAULTS``
below (every setting is there), try a run with ``airflow dags test
featurize_refresh``, then ``airflow dags unpause featurize_refresh`` with
Airflow's API server, scheduler and DAG processor running.

For ``local``, featurize lives in a virtualenv of its own on every worker
(its TensorFlow and Beam must not share Airflow's environment), and
``featurize`` names its executable; the DAG runs it and never imports
featurize. For ``dataflow``, ``template`` is the refresh Flex Template's
spec file (docs/dataflow.md), and the Airflow connection
``google_cloud_default`` needs an identity that can launch Dataflow jobs
in ``project``.

Two refreshes of one dataset must not overlap: ``max_active_runs=1`` keeps
Airflow from starting a second run, and featurize's own lock
(``ROOT/.lock``) refuses one started elsewhere.
"""
import datetime
import logging
import os
import shlex
import shutil
import subprocess
from typing import Any, Dict, Iterable, List, Mapping, NoReturn, Optional, Tuple

from airflow.providers.google.cloud.operators.dataflow import (
    DataflowStartFlexTemplateOperator)
from airflow.sdk import DAG, Param, task

# Every setting of the refresh, in one place: the nightly runs use these
# values, so edit them when you install the DAG. A run's conf (``airflow
# dags trigger featurize_refresh --conf '{"keep": 7}'``, or the trigger
# form) overrides any of them for that run; a conf key that is not one of
# them fails the run at once. What each does: SETTINGS below.
DEFAULTS: Dict[str, Any] = {
    'runner': 'local',
    'input': 'gs://YOUR-BUCKET/shards/*.tfrecord',
    'dataset': 'gs://YOUR-BUCKET/features',
    'model': 'vgg16',
    'weights': 'imagenet',
    'layer': '',
    'pooling': 'none',
    'precision': 'float32',
    'max_error_fraction': 0.05,
    'keep': None,
    # runner=local
    'featurize': '~/featurize-venv/bin/featurize',
    'extra_flags': [],
    # runner=dataflow
    'project': 'YOUR-PROJECT',
    'region': 'us-central1',
    'template': 'gs://YOUR-BUCKET/templates/featurize-refresh.json',
    'temp_location': 'gs://YOUR-BUCKET/featurize/temp',
    'service_account_email': None,
}

PLACEHOLDER = 'YOUR-'
# featurize's own choices (transforms/extract/models/model_config.py);
# tests/system/test_airflow_dag.py checks that they still agree.
POOLINGS = ('none', 'avg', 'max')
PRECISIONS = ('float32', 'bfloat16')


def _list_of(names: Iterable[str]) -> str:
  """A JSON-schema pattern: one of ``names``, or several joined by ','."""
  one = '(' + '|'.join(names) + ')'
  return f'^{one}(,{one})*$'


_TEXT = {'type': 'string', 'minLength': 1}
_OPTIONAL_TEXT = {'type': ['null', 'string']}
# What each setting is: the JSON schema its value must match (Airflow
# checks a run's conf against it before the run starts) and what it does
# (shown in the trigger form). Same names as DEFAULTS.
SETTINGS: Dict[str, Tuple[Dict[str, Any], str]] = {
    'runner': ({'type': 'string', 'enum': ['local', 'dataflow']},
               'Where the refresh runs: local (featurize on the Airflow '
               'worker) or dataflow (the refresh Flex Template).'),
    'input': (_TEXT, 'Shard pattern, local or gs:// ("**" recurses).'),
    'dataset': (_TEXT, 'Root of the versioned feature dataset, local or '
                'gs://.'),
    'model': (_TEXT, 'A model of keras.applications by name, any case '
              '(vgg16, resnet50, efficientnetb0...; featurize models lists '
              'them).'),
    'weights': (_TEXT, 'imagenet, random, or a path / gs:// URL of the '
                'model\'s official Keras weight file.'),
    'layer': ({'type': 'string', 'pattern': r'^([\w.-]+(,[\w.-]+)*)?$'},
              'The model\'s layer whose output is the feature, or several '
              'joined by "," (one pass gives each); empty for the output '
              'of its convolutional base (featurize layers MODEL lists '
              'them).'),
    'pooling': ({'type': 'string', 'pattern': _list_of(POOLINGS)},
                'Pooling over the spatial axes: one value, or one per layer '
                'joined by ",".'),
    'precision': ({'type': 'string', 'enum': list(PRECISIONS)},
                  'bfloat16 is faster on CPUs with AMX.'),
    'max_error_fraction': (
        {'type': 'number', 'minimum': 0, 'maximum': 1},
        'The refresh fails (publishing nothing) when more than this share '
        'of the images it reads cannot be used.'),
    'keep': ({'type': ['null', 'integer'], 'minimum': 1},
             'Keep the newest N versions (null: all).'),
    'featurize': (_TEXT, 'local: the featurize executable of its own '
                  'virtualenv, by its full path (a leading ~ is the '
                  'worker\'s home).'),
    'extra_flags': ({'type': 'array', 'items': {'type': 'string'}},
                    'local: more flags of featurize refresh or Beam, one '
                    'list item each.'),
    'project': (_TEXT, 'dataflow: the GCP project.'),
    'region': (_TEXT, 'dataflow: the region.'),
    'template': (_TEXT, 'dataflow: gs:// path of the refresh Flex Template '
                 'spec file.'),
    'temp_location': (_TEXT, 'dataflow: gs:// folder for temporary files.'),
    'service_account_email': (_OPTIONAL_TEXT,
                              'dataflow: the workers\' service account.'),
}
# A setting added to DEFAULTS alone would be ignored: refuse to load.
if set(SETTINGS) != set(DEFAULTS):
  raise ValueError(
      'DEFAULTS and SETTINGS must name the same settings; only in '
      f'DEFAULTS: {sorted(set(DEFAULTS) - set(SETTINGS))}, only in '
      f'SETTINGS: {sorted(set(SETTINGS) - set(DEFAULTS))}')

# The job flags both runners pass, in this order.
JOB_FLAGS = ('input', 'dataset', 'model', 'weights', 'layer', 'pooling',
             'precision', 'max_error_fraction')
# What each runner needs set to something other than a placeholder.
REQUIRED = {'local': ('input', 'dataset', 'featurize'),
            'dataflow': ('input', 'dataset', 'project', 'region', 'template',
                         'temp_location')}
ERROR_PREFIX = 'featurize: error:'
# featurize's output and the line a failure ends with go through one
# logger, so that they reach the task's log in the order they happened.
LOG = logging.getLogger('featurize')


def unknown_settings(conf: Mapping[str, Any]) -> Optional[str]:
  """Why a run's conf cannot be used (keys that are no setting), or None."""
  unknown = sorted(set(conf or {}) - set(DEFAULTS))
  if not unknown:
    return None
  return (f'unknown setting(s) in the run\'s conf: {", ".join(unknown)}; '
          f'the settings are: {", ".join(DEFAULTS)}')


def placeholders(params: Mapping[str, Any]) -> List[str]:
  """The settings ``params['runner']`` needs that are still placeholders."""
  return [name for name in REQUIRED[params['runner']]
          if not params[name] or PLACEHOLDER in str(params[name])]


def featurize_executable(params: Mapping[str, Any]) -> str:
  """``params['featurize']``, a leading ``~`` the worker's home."""
  return os.path.expanduser(params['featurize'])


def featurize_missing(params: Mapping[str, Any]) -> Optional[str]:
  """Why a local refresh cannot run ``params['featurize']`` on this
  worker, or None (and None for ``runner=dataflow``)."""
  if params['runner'] != 'local' or shutil.which(featurize_executable(params)):
    return None
  return (f'featurize {params["featurize"]!r} is not an executable on this '
          'worker: set featurize to the featurize of its own virtualenv '
          '(e.g. ~/featurize-venv/bin/featurize)')


def _flag_values(params: Mapping[str, Any]) -> List[Tuple[str, str]]:
  """``(name, value)`` of every job flag a refresh is given, as text."""
  # An empty layer is the model's own feature layer: featurize's default.
  values = [(name, str(params[name])) for name in JOB_FLAGS
            if params[name] != '']
  if params['keep'] is not None:
    values.append(('keep', str(params['keep'])))
  return values


def featurize_argv(params: Mapping[str, Any]) -> List[str]:
  """The ``featurize refresh`` command line of a local refresh.

  Args:
    params: The run's settings.

  Returns:
    The argv list: one element per flag and value, never parsed by a shell.
  """
  argv = [featurize_executable(params), 'refresh']
  for name, value in _flag_values(params):
    argv += ['--' + name.replace('_', '-'), value]
  return argv + list(params['extra_flags'])


def flex_template_body(params: Mapping[str, Any], date: str) -> Dict:
  """The Flex Template launch request of a Dataflow refresh.

  Args:
    params: The run's settings.
    date: The run's date, ``YYYYMMDD``, for the job name.

  Returns:
    The ``projects.locations.flexTemplates.launch`` request body. Template
    parameters are strings named like the refresh flags; ``keep`` and the
    service account are left out when unset.
  """
  environment = {'tempLocation': params['temp_location']}
  if params['service_account_email']:
    environment['serviceAccountEmail'] = params['service_account_email']
  return {'launchParameter': {
      # Dataflow job names are lowercase letters, digits and dashes; the
      # operator appends a unique suffix.
      'jobName': f'featurize-refresh-{date}',
      'containerSpecGcsPath': params['template'],
      'parameters': dict(_flag_values(params)),
      'environment': environment,
  }}


def run_featurize(argv: List[str]) -> Tuple[int, Optional[str]]:
  """Runs featurize, its output logged line by line as it comes.

  Returns:
    Its exit status, and its last ``featurize: error: ...`` line (None if
    it printed none).
  """
  error = None
  with subprocess.Popen(argv, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True,
                        errors='replace') as process:
    for line in process.stdout:
      LOG.info('%s', line.rstrip('\n'))
      if line.startswith(ERROR_PREFIX):
        error = line.strip()
  return process.returncode, error


def failure_line(status: int, error: Optional[str]) -> str:
  """The one line that ends the log of a refresh that failed."""
  if status < 0:
    return f'featurize was killed by signal {-status}'
  return (f'{error or "featurize failed (its output is above)"} '
          f'(exit status {status})')


def fail(line: str, status: int = 1) -> NoReturn:
  """Ends the task failed, its log ending with ``line``.

  A known failure is one line: Airflow logs an exception with its
  traceback, which would bury the line under the DAG's own frames, but a
  ``SystemExit`` only as ``Task exited`` with its status.
  """
  LOG.error('%s', line)
  raise SystemExit(max(status, 1))


with DAG(
    dag_id='featurize_refresh',
    description='Nightly featurize refresh of a versioned feature dataset',
    schedule='0 2 * * *',
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
    # No backlog: when unpaused, the DAG runs the last night's refresh at
    # once (the interval that ended at the latest 02:00 UTC), then one a
    # night. Catching up every night since start_date would only repeat
    # one refresh: each brings the dataset up to date with what is there.
    catchup=False,
    max_active_runs=1,
    tags=['featurize'],
    # The Flex Template body is built by a macro and must stay a dict
    # (a string-rendering template cannot leave out ``keep``). Only that
    # operator uses templates in this DAG.
    render_template_as_native_obj=True,
    user_defined_macros={'flex_template_body': flex_template_body},
    params={name: Param(DEFAULTS[name], description=description, **schema)
            for name, (schema, description) in SETTINGS.items()},
) as dag:

  @task.branch
  def choose_runner(params=None, dag_run=None) -> str:
    """Fails at once on a bad conf or unset settings, then picks the
    runner's task."""
    unknown = unknown_settings(dag_run.conf)
    if unknown:
      fail(unknown, 2)
    unset = placeholders(params)
    if unset:
      fail(f'set {", ".join(unset)} (the DAG\'s DEFAULTS or the run\'s '
           'conf): placeholders cannot be refreshed', 2)
    missing = featurize_missing(params)
    if missing:
      fail(missing, 2)
    return f'refresh_{params["runner"]}'

  # A task with an argv list rather than a BashOperator: no shell ever
  # parses the values (a pattern like 'shards/*' or a path with quotes
  # reaches featurize as it is), and the optional --keep and extra flags
  # need no shell quoting logic.
  @task
  def refresh_local(params=None) -> None:
    """Runs ``featurize refresh``; a failure ends the log with its
    ``featurize: error:`` line and exit status."""
    missing = featurize_missing(params)  # this worker may be another
    if missing:
      fail(missing, 2)
    argv = featurize_argv(params)
    LOG.info('running: %s', shlex.join(argv))
    status, error = run_featurize(argv)
    if status:
      fail(failure_line(status, error), status)

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
