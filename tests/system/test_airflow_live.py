"""The ``featurize_refresh`` DAG run live: Airflow's own services run it
on its schedule and on triggers, on loopback.

* ``test_the_guide_ends_with_refreshes_on_a_schedule``: docs/refresh.md's
  Airflow guide, every command block in order, typed into one new shell
  (a fresh ``HOME``, no Airflow or virtualenv variables). Where the guide
  cannot be followed to the letter here: its two installs are the suite's
  own virtualenvs, linked where the guide puts them; the editor it opens
  is a script that sets ``DEFAULTS``; the API server listens on a free
  port on loopback instead of 8080; and systemd does not run on the build
  machines, so its ``systemctl`` lines start and stop each service from
  the unit file's own command line and environment.
* ``test_a_live_airflow_refreshes_through_its_scheduler``: ``airflow
  standalone`` (API server, scheduler, DAG processor, triggerer). The
  scheduled run makes the first version; a run triggered with a conf
  after shards were added reads only the new shards; a misspelled conf
  key fails the run, naming the settings; a refresh that fails ends its
  task's log with featurize's own error line.

Both check with ``featurize history`` what each run published, and stop
every process they started.
"""
import configparser
import json
import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import uuid
from typing import Dict, List, Optional

import pytest

from pipeline.refresh import versions
from tests.support import airflow_env
from tests.support.ports import free_port
from tests.support.refresh_data import IMAGES_PER_SHARD, write_shard

DAG_ID = 'featurize_refresh'
DAG_FILE = os.path.join(airflow_env.ROOT, 'deploy', 'airflow',
                        'featurize_refresh_dag.py')
GUIDE = os.path.join(airflow_env.ROOT, 'docs', 'refresh.md')
FEATURIZE = os.path.join(os.path.dirname(sys.executable), 'featurize')
# A fresh login's PATH: no virtualenv on it.
PLAIN_PATH = '/usr/local/bin:/usr/bin:/bin'
# The guide's installs: the suite's own virtualenvs stand in for them.
INSTALLS = re.compile(r'^(python3 -m venv |\S+/bin/pip install )')


def guide_blocks() -> List[str]:
  """The ``bash`` blocks of docs/refresh.md's Airflow section, in order."""
  with open(GUIDE) as f:
    text = f.read()
  section = text[text.index('\n### Airflow\n'):]
  section = section[:section.index('\n### ', 1)]
  return re.findall(r'^```bash\n(.*?)^```$', section, re.S | re.M)


def dag_settings(shards: str, dataset: str, weights: str) -> Dict:
  """DEFAULTS for the tests: the test shards, a small, quick model."""
  return {'input': os.path.join(shards, '*.tfrecord'), 'dataset': dataset,
          'weights': weights, 'layer': 'block1_pool', 'pooling': 'avg',
          'extra_flags': ['--image-size', '64', '--batch-size', '4']}


def history(root: str) -> Dict[str, str]:
  """``featurize history ROOT``: its line for each version."""
  result = subprocess.run([FEATURIZE, 'history', root], capture_output=True,
                          text=True, check=True)
  return {line.split()[0]: line for line in result.stdout.splitlines()}


def images_read(line: str) -> int:
  """The images a version read, from its ``featurize history`` line."""
  return int(re.search(r'\((\d+) read\)', line).group(1))


class Shell:
  """One bash that commands are typed into, as into a terminal: exports,
  ``source`` and the working folder carry from block to block. ``set -e``:
  a command that fails ends the shell, and the block with it."""

  def __init__(self, env: Dict[str, str], cwd: str):
    self._process = subprocess.Popen(
        ['bash', '--norc', '--noprofile'], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env, cwd=cwd, start_new_session=True)
    self._lines: 'queue.Queue[Optional[str]]' = queue.Queue()
    threading.Thread(target=self._read, daemon=True).start()
    self.type('set -e')

  def _read(self):
    for line in self._process.stdout:
      self._lines.put(line)
    self._lines.put(None)

  def type(self, commands: str, timeout_s: float = 900) -> str:
    """Types ``commands``; returns their output once they have finished.

    Raises:
      AssertionError: a command failed (the shell ended) or took longer
        than ``timeout_s``.
    """
    done = f'__done_{uuid.uuid4().hex}__'
    self._process.stdin.write(f'{commands}\necho {done}\n')
    self._process.stdin.flush()
    output = []
    while True:
      try:
        line = self._lines.get(timeout=timeout_s)
      except queue.Empty as e:
        raise AssertionError(f'still running after {timeout_s} s:\n'
                             f'{commands}\n{"".join(output)[-5000:]}') from e
      if line is None:
        raise AssertionError(f'failed (exit status {self._process.wait()})'
                             f':\n{commands}\n{"".join(output)[-8000:]}')
      if line.strip() == done:
        return ''.join(output)
      output.append(line)

  def close(self):
    self._process.stdin.close()
    self._process.wait(timeout=60)


class Systemd:
  """``systemctl --user`` for the guide's lines, where systemd does not
  run: each ``airflow@NAME`` unit runs its template's ``ExecStart`` with
  its ``Environment``, ``%h`` and ``%i`` expanded as systemd does."""

  def __init__(self, home: str, env: Dict[str, str], logs: str):
    self.home, self.env, self.logs = home, env, logs
    self.services: Dict[str, airflow_env.Service] = {}  # running now
    self.started: List[airflow_env.Service] = []

  def command(self, line: str) -> None:
    words = shlex.split(line, comments=True)
    if words[0] == 'loginctl':  # linger: nothing to do without systemd
      assert words[1] == 'enable-linger', line
      return
    assert words[:2] == ['systemctl', '--user'], line
    if words[2] == 'daemon-reload':
      return
    assert words[2] in ('enable', 'disable') and words[3] == '--now', line
    if words[2] == 'enable':
      for unit in words[4:]:
        self.services[unit] = self._start(unit)
        self.started.append(self.services[unit])
    else:
      airflow_env.stop_together([self.services.pop(u) for u in words[4:]])

  def _start(self, unit: str) -> airflow_env.Service:
    template, instance = unit.split('@')
    path = os.path.join(self.home, '.config', 'systemd', 'user',
                        f'{template}@.service')
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read(path)
    service = parser['Service']

    def expand(text: str) -> str:
      return text.replace('%h', self.home).replace('%i', instance)
    env = dict(self.env)
    for assignment in shlex.split(expand(service.get('Environment', ''))):
      name, value = assignment.split('=', 1)
      env[name] = value
    return airflow_env.Service.start(
        shlex.split(expand(service['ExecStart'])), env,
        os.path.join(self.logs, f'{unit}.log'), cwd=self.home)

  def stop_all(self) -> None:
    airflow_env.stop_together(list(self.services.values()))


EDITOR = '''#!{python}
import json, sys
sys.path.insert(0, {root!r})
from tests.support.airflow_env import edit_defaults
with open(sys.argv[1]) as f:
  text = f.read()
with open(sys.argv[1], 'w') as f:
  f.write(edit_defaults(text, json.loads({values!r})))
'''


def test_the_guide_ends_with_refreshes_on_a_schedule(tmp_path, notop_weights):
  home = tmp_path / 'home'
  home.mkdir()
  airflow_venv = os.path.dirname(airflow_env.ensure_venv())
  os.symlink(airflow_env.ROOT, home / 'featurize')
  os.symlink(sys.prefix, home / 'featurize-venv')
  os.symlink(airflow_venv, home / 'airflow-venv')
  shards = tmp_path / 'data' / 'shards'
  shards.mkdir(parents=True)
  for index in (0, 1):
    write_shard(str(shards), index)
  dataset = str(tmp_path / 'data' / 'features')
  editor = tmp_path / 'editor'
  editor.write_text(EDITOR.format(
      python=sys.executable, root=airflow_env.ROOT, values=json.dumps(
          dag_settings(str(shards), dataset, notop_weights))))
  editor.chmod(0o755)
  port = free_port()
  env = {'HOME': str(home), 'PATH': PLAIN_PATH, 'LANG': 'C.UTF-8',
         'USER': 'featurize-test', 'EDITOR': str(editor),
         **airflow_env.loopback(port)}
  logs = tmp_path / 'services'
  logs.mkdir()
  shell = Shell(env, str(home))
  systemd = Systemd(str(home), env, str(logs))
  airflow = airflow_env.Airflow(os.path.join(airflow_venv, 'bin'),
                                str(home / 'airflow'),
                                str(home / 'airflow' / 'dags'))
  outputs = []
  try:
    for block in guide_blocks():
      if 'airflow dags unpause' in block:
        # New shards land before the first night.
        write_shard(str(shards), 2)
      if re.search('airflow dags (unpause|trigger)', block):
        known = [r['run_id'] for r in airflow_env.runs(airflow, DAG_ID)]
      lines = [line for line in block.splitlines() if not INSTALLS.match(line)]
      typed = []
      for line in lines + ['']:
        if line.startswith(('systemctl ', 'loginctl ')) or not line:
          if typed:
            outputs.append(shell.type('\n'.join(typed)))
            typed = []
          if line:
            systemd.command(line)
        else:
          typed.append(line)
      if 'systemctl --user enable --now' in block:
        airflow_env.wait_until(
            lambda: airflow_env.api_healthy(port), 180,
            'the services up', explain=lambda: '\n'.join(
                s.tail(3000) for s in systemd.services.values()))
      if 'airflow dags unpause' in block:
        scheduled = airflow_env.finished_run(airflow, DAG_ID, 'scheduled__',
                                             known)
        assert scheduled['state'] == 'success', scheduled
      if 'airflow dags trigger' in block:
        manual = airflow_env.finished_run(airflow, DAG_ID, 'manual__', known)
        assert manual['state'] == 'success', manual
    shell.close()
  finally:
    systemd.stop_all()

  text = '\n'.join(outputs)
  # Step 4: load_examples off in airflow.cfg itself, so no variable is
  # needed: no example DAG was ever loaded.
  with open(home / 'airflow' / 'airflow.cfg') as f:
    assert re.search(r'^load_examples = False$', f.read(), re.M)
  listed = [line for line in text.splitlines() if '|' in line]
  assert any(line.startswith('featurize_refresh ') for line in listed)
  assert not [line for line in listed if line.startswith('example_')]
  # Step 7: the first version, by hand; step 8: the scheduled run read
  # only the shard added since; step 9 printed the next night and the log.
  lines = sorted(history(dataset).values())
  assert len(lines) == 2, lines
  assert images_read(lines[0]) == 2 * IMAGES_PER_SHARD
  assert images_read(lines[1]) == IMAGES_PER_SHARD
  assert re.search(r'\d{4}-\d\d-\d\dT02:00:00\+00:00', text)
  # Step 10: the services stopped, and the DAG paused.
  assert len(systemd.started) == 3 and not systemd.services
  assert not [s for s in systemd.started if s.running()]
  dags = airflow.json('dags', 'list')
  assert [(d['dag_id'], str(d['is_paused'])) for d in dags] == [
      (DAG_ID, 'True')]


@pytest.fixture
def standalone(tmp_path):
  """``airflow standalone`` on a new home and a free loopback port, the
  DAG copied in with ``DEFAULTS`` set by ``settings`` (a callable the
  test gives); stopped, every process of it, at the end."""
  started = []

  def start(settings: Dict) -> airflow_env.Airflow:
    home = tmp_path / 'airflow-home'
    dags = home / 'dags'
    dags.mkdir(parents=True)
    with open(DAG_FILE) as f:
      (dags / os.path.basename(DAG_FILE)).write_text(
          airflow_env.edit_defaults(f.read(), settings))
    airflow = airflow_env.start(str(home), str(dags))
    port = free_port()
    # standalone starts its services as `airflow ...` from the PATH, as
    # in a shell where Airflow's virtualenv is active.
    env = airflow.environ(**airflow_env.loopback(port))
    env['PATH'] = airflow.bin + os.pathsep + env['PATH']
    service = airflow_env.Service.start(
        [os.path.join(airflow.bin, 'airflow'), 'standalone'], env,
        str(tmp_path / 'standalone.log'), cwd=str(home))
    started.append(service)
    airflow_env.wait_until(lambda: airflow_env.api_healthy(port), 180,
                           'airflow standalone up', explain=service.tail)
    airflow_env.wait_until(
        lambda: [d for d in airflow.json('dags', 'list')
                 if d['dag_id'] == DAG_ID], 120, 'the DAG parsed',
        explain=service.tail)
    return airflow

  yield start
  for service in started:
    service.stop()
    assert not service.running()


def trigger(airflow: airflow_env.Airflow, conf: dict) -> dict:
  """Triggers a run with ``conf``; returns it once it has ended."""
  known = [r['run_id'] for r in airflow_env.runs(airflow, DAG_ID)]
  result = airflow.run('dags', 'trigger', DAG_ID, '--conf', json.dumps(conf))
  assert result.returncode == 0, result.stdout + result.stderr
  return airflow_env.finished_run(airflow, DAG_ID, 'manual__', known)


def states(airflow: airflow_env.Airflow, run_id: str) -> Dict[str, str]:
  return {t['task_id']: t['state'] for t in airflow.json(
      'tasks', 'states-for-dag-run', DAG_ID, run_id)}


def test_a_live_airflow_refreshes_through_its_scheduler(
    tmp_path, notop_weights, standalone):
  shards = tmp_path / 'shards'
  shards.mkdir()
  for index in (0, 1):
    write_shard(str(shards), index)
  root = str(tmp_path / 'features')
  airflow = standalone({**dag_settings(str(shards), root, notop_weights),
                       'featurize': FEATURIZE})

  # Unpaused, the scheduler runs the last night's refresh at once.
  result = airflow.run('dags', 'unpause', DAG_ID)
  assert result.returncode == 0, result.stderr
  scheduled = airflow_env.finished_run(airflow, DAG_ID, 'scheduled__')
  assert scheduled['state'] == 'success', scheduled
  assert states(airflow, scheduled['run_id']) == {
      'choose_runner': 'success', 'refresh_local': 'success',
      'refresh_dataflow': 'skipped'}
  first = versions.latest(root)['version']
  assert images_read(history(root)[first]) == 2 * IMAGES_PER_SHARD

  # New shards, and a run triggered with a conf: only they are read.
  for index in (2, 3, 4):
    write_shard(str(shards), index)
  manual = trigger(airflow, {'keep': 1})
  assert manual['state'] == 'success', manual
  second = versions.latest(root)
  assert second['parent'] == first
  listed = history(root)
  assert list(listed) == [second['version']]  # keep: 1
  assert images_read(listed[second['version']]) == 3 * IMAGES_PER_SHARD
  assert second['counts']['images_in'] == 5 * IMAGES_PER_SHARD

  # A misspelled setting fails the run at once, naming the settings.
  misspelled = trigger(airflow, {'inputs': str(tmp_path / 'other' / '*')})
  assert misspelled['state'] == 'failed', misspelled
  assert states(airflow, misspelled['run_id']) == {
      'choose_runner': 'failed', 'refresh_local': 'upstream_failed',
      'refresh_dataflow': 'upstream_failed'}
  log = airflow_env.task_log(airflow.home, DAG_ID, misspelled['run_id'],
                             'choose_runner')
  assert airflow_env.logged_by(log, 'featurize')[-1].startswith(
      "unknown setting(s) in the run's conf: inputs; the settings are: "
      'runner, input, dataset, model, weights, layer, pooling, precision, '
      'max_error_fraction, keep, featurize, extra_flags'), log[-5:]
  assert versions.latest(root)['version'] == second['version']

  # A refresh that fails: its task's log ends with featurize's own line
  # and exit status, not a traceback.
  missing = str(tmp_path / 'nothing' / '*.tfrecord')
  failed = trigger(airflow, {'input': missing})
  assert failed['state'] == 'failed', failed
  log = airflow_env.task_log(airflow.home, DAG_ID, failed['run_id'],
                             'refresh_local')
  assert airflow_env.logged_by(log, 'featurize')[-1] == (
      f"featurize: error: --input '{missing}' matches no files "
      '(exit status 2)'), log[-5:]
  assert [e.get('exit_code') for e in log if e['event'] == 'Task exited'
         ] == [2]
  assert not re.search('Traceback|CalledProcessError|error_detail',
                       json.dumps(log))
