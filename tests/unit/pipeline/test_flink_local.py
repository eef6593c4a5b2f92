"""The pieces of ``featurize flink-local``, one function at a time (no
cluster here: tests/system/test_flink.py runs a real one)."""
import dataclasses
import json
import os
import subprocess
import sys
import time
import zipfile

import pytest

from apache_beam.portability.api import (beam_provision_api_pb2,
                                         endpoints_pb2)
from google.protobuf import struct_pb2
from pipeline import launch, options
from pipeline.runners.flink_local import (configuration, distribution,
                                          job_server, processes, sdk_boot,
                                          services, worker_pool)
from pipeline.runners.flink_local import commands as cli
from pipeline.runners.flink_local.settings import ClusterSettings
from tests.support.paths import ROOT




def test_run_config_names_what_the_cluster_serves():
  defaults = ClusterSettings(cluster_dir='/tmp/x')
  job = options.parse_run_args(['--config', os.path.join(
      ROOT, 'run_configs', 'flink.yaml'), '--input', 'x', '--output', 'y'])
  flags = dict(f[2:].split('=', 1) for f in job.beam_args)
  assert flags['runner'] == 'PortableRunner'
  assert flags['job_endpoint'] == f'localhost:{defaults.job_port}'
  assert flags['environment_type'] == 'EXTERNAL'
  assert flags['environment_config'] == defaults.environment_config
  assert int(flags['parallelism']) == defaults.total_slots
  assert flags['sdk_worker_parallelism'] == '1'


def test_each_taskmanager_resolves_the_pool_name_to_its_own_pool():
  s = ClusterSettings(cluster_dir='/c', taskmanagers=3)
  hosts = [configuration.hosts_file(s, i, 'myhost') for i in (1, 2, 3)]
  for i, text in enumerate(hosts, 1):
    names = {}
    for line in text.splitlines():
      address, *aliases = line.split()
      for alias in aliases:
        names.setdefault(alias, address)
    assert names[s.worker_pool_host] == f'127.0.50.{i}'
    assert names['localhost'] == '127.0.0.1' and names['myhost'] == '127.0.0.1'
  base = {'taskmanager': {'numberOfTaskSlots': 1, 'host': 'x'},
          'env': {'java': {'opts': {'all': '--add-opens=A'}}}}
  conf = configuration.flink_config(s, base, taskmanager=2)
  assert conf['env']['java']['opts']['taskmanager'] == (
      '-Djdk.net.hosts.file=/c/conf/tm-2/hosts')
  assert conf['env']['java']['opts']['all'] == '--add-opens=A'  # kept
  assert conf['taskmanager']['resource-id'] == 'tm-2'
  assert conf['taskmanager']['numberOfTaskSlots'] == 2
  assert 'env' not in configuration.flink_config(s, {}, taskmanager=None)


def test_flink_config_restarts_jobs_and_keeps_files_in_the_cluster_folder():
  s = ClusterSettings(cluster_dir='/c', restart_attempts=3,
                      heartbeat_timeout_ms=9000)
  conf = configuration.flink_config(s, {})
  assert conf['restart-strategy'] == {
      'type': 'fixed-delay', 'fixed-delay': {'attempts': 3, 'delay': '5 s'}}
  assert conf['heartbeat'] == {'interval': 2000, 'timeout': 9000}
  assert conf['io']['tmp']['dirs'] == '/c/tmp'
  assert conf['blob']['storage']['directory'].startswith('/c/tmp')
  assert conf['parallelism']['default'] == 4
  assert conf['rest']['port'] == 8081


def test_services_pools_bind_their_own_address_with_workers_first_on_path():
  s = ClusterSettings(cluster_dir='/c', home='/h',
                      worker_python='/venv/bin/python')
  commands = services.services(s, '/launcher/python')
  assert list(commands) == services.service_names(s) == [
      'jobmanager', 'tm-1', 'tm-2', 'job-server', 'pool-1', 'pool-2']
  pool = commands['pool-2']
  assert '--address=127.0.50.2:50000' in pool.argv
  assert '--worker-python=/venv/bin/python' in pool.argv
  assert pool.argv[0] == '/launcher/python'
  assert pool.env['PATH'].split(os.pathsep)[0] == '/venv/bin'
  assert commands['tm-1'].env['FLINK_CONF_DIR'] == '/c/conf/tm-1'
  assert commands['tm-1'].argv[-1] == 'start-foreground'
  assert '--job-port=8099' in commands['job-server'].argv
  assert s.job_server_launcher in commands['job-server'].argv
  official = dataclasses.replace(s, job_server_jar='/jars/official.jar')
  assert '/jars/official.jar' in services.services(
      official, 'py')['job-server'].argv


def test_settings_refuse_what_the_job_server_cannot_run():
  with pytest.raises(ValueError, match='Flink 1.19'):
    ClusterSettings(flink_version='1.20.1')
  with pytest.raises(ValueError):
    ClusterSettings(taskmanagers=0)
  assert ClusterSettings(home='/h').cluster_dir == '/h/cluster'


def test_a_running_cluster_is_not_reconfigured(tmp_path):
  saved = ClusterSettings(cluster_dir=str(tmp_path))
  configuration.check_compatible(saved, saved, {'jobmanager', 'pool-1'})
  with pytest.raises(configuration.ClusterError, match='other settings'):
    configuration.check_compatible(saved, dataclasses.replace(saved, slots=4),
                              {'jobmanager'})
  other_python = dataclasses.replace(saved, worker_python='/other/python')
  with pytest.raises(configuration.ClusterError, match='pools are stopped'):
    configuration.check_compatible(saved, other_python,
                                   {'jobmanager', 'pool-1'})
  configuration.check_compatible(saved, other_python, {'jobmanager', 'tm-1'})
  assert configuration.load_settings(str(tmp_path)) == other_python


def test_job_server_manifest_lines_fit_the_jar_format():
  jars = [f'lib/some-rather-long-artifact-name-{i}.jar' for i in range(40)]
  data = job_server.manifest(job_server.MAIN_CLASS, jars)
  lines = data.split(b'\r\n')
  assert all(len(line) <= 72 for line in lines)
  # Continuation lines (a leading space) join back into the header.
  joined = b''.join(line[1:] if line.startswith(b' ') else b'\n' + line
                    for line in lines).decode()
  assert f'Main-Class: {job_server.MAIN_CLASS}' in joined
  assert 'Class-Path: ' + ' '.join(jars) in joined
  assert data.endswith(b'\r\n\r\n')


def test_job_server_launcher_runs_with_java(tmp_path):
  """The manifest format is the JVM's to judge: a launcher jar over a
  classpath jar of a class with a main method, run with `java -jar`."""
  source = tmp_path / 'Hello.java'
  source.write_text('public class Hello { public static void main(String[] '
                    'a) { System.out.println("hello " + a[0]); } }')
  subprocess.run(['javac', '-d', str(tmp_path / 'classes'), str(source)],
                 check=True)
  lib = tmp_path / 'lib'
  lib.mkdir()
  with zipfile.ZipFile(lib / ('x' * 80 + '.jar'), 'w') as z:
    z.write(tmp_path / 'classes' / 'Hello.class', 'Hello.class')
  with zipfile.ZipFile(tmp_path / 'launcher.jar', 'w') as z:
    z.writestr('META-INF/MANIFEST.MF', job_server.manifest(
        'Hello', ['lib/' + 'x' * 80 + '.jar']))
  result = subprocess.run(['java', '-jar', str(tmp_path / 'launcher.jar'),
                           'there'], capture_output=True, text=True)
  assert result.stdout.strip() == 'hello there', result.stderr


def test_boot_gives_sdk_worker_main_the_jobs_options_and_endpoints():
  options_struct = struct_pb2.Struct()
  options_struct.update({'beam:option:job_name:v1': 'j1',
                         'beam:option:experiments:v1': ['a']})
  info = beam_provision_api_pb2.ProvisionInfo(
      pipeline_options=options_struct, runner_capabilities=['cap1', 'cap2'],
      logging_endpoint=endpoints_pb2.ApiServiceDescriptor(url='host:1'),
      control_endpoint=endpoints_pb2.ApiServiceDescriptor(url=''))
  args = sdk_boot.parse_args(['--id=7-1', '--provision_endpoint=p:3',
                              '--control_endpoint=host:2',
                              '--logging_endpoint=ignored:9', '--extra=x'])
  env = sdk_boot.worker_environment(args, info, {'KEEP': '1'})
  assert env['KEEP'] == '1' and env['WORKER_ID'] == '7-1'
  assert env['LOGGING_API_SERVICE_DESCRIPTOR'].strip() == 'url: "host:1"'
  # Empty in the provision info: the flag's address is used.
  assert env['CONTROL_API_SERVICE_DESCRIPTOR'].strip() == 'url: "host:2"'
  assert 'STATUS_API_SERVICE_DESCRIPTOR' not in env
  assert env['RUNNER_CAPABILITIES'] == 'cap1 cap2'
  # What Beam's sdk_worker_main makes of it.
  from apache_beam.runners.worker import sdk_worker_main
  parsed = sdk_worker_main._load_pipeline_options(env['PIPELINE_OPTIONS'])
  assert parsed == {'job_name': 'j1', 'experiments': ['a']}


def test_pool_check_names_what_the_worker_python_lacks(tmp_path):
  assert worker_pool.check_worker_python(sys.executable) is None
  problem = worker_pool.check_worker_python(str(tmp_path / 'no-python'))
  assert 'cannot be run' in problem
  bare = tmp_path / 'bare'
  subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(bare)],
                 check=True)
  problem = worker_pool.check_worker_python(str(bare / 'bin' / 'python'))
  assert "No module named 'apache_beam'" in problem


def test_pool_refuses_workers_with_its_problem():
  servicer = worker_pool.CheckedWorkerPoolServicer(
      'worker Python /x cannot import featurize', use_process=True)
  from apache_beam.portability.api import beam_fn_api_pb2
  response = servicer.StartWorker(
      beam_fn_api_pb2.StartWorkerRequest(worker_id='1'), None)
  assert response.error == ('featurize worker pool: worker Python /x cannot '
                            'import featurize')


def test_processes_stop_only_what_they_started(tmp_path):
  folder = str(tmp_path)
  record = processes.start(processes.Service(
      'sleeper', ['sh', '-c', 'sleep 60 & wait']), folder)
  assert processes.is_alive(record)
  child = int(subprocess.run(['pgrep', '-P', str(record.pid)],
                             capture_output=True, text=True).stdout.split()[0])
  # A record whose start time is not the process's: a reused PID.
  stranger = dataclasses.replace(record, start_ticks=record.start_ticks + 1)
  assert not processes.is_alive(stranger)
  with open(os.path.join(folder, 'pids', 'other.json'), 'w') as f:
    json.dump(dataclasses.asdict(dataclasses.replace(stranger,
                                                     name='other')), f)
  assert processes.stop(folder, 'other') is False
  assert processes.is_alive(record)
  assert processes.stop(folder, 'sleeper', timeout_s=5) is True
  assert not processes.is_alive(record)
  time.sleep(0.2)
  # The whole group is gone (or a zombie nobody has reaped yet).
  assert processes.start_ticks(child) is None or open(
      f'/proc/{child}/stat').read().rsplit(')', 1)[1].split()[0] == 'Z'
  assert processes.read_record(folder, 'sleeper') is None


def test_status_without_a_cluster_says_so(tmp_path, capsys):
  assert cli.main(['status', '--cluster-dir', str(tmp_path)]) == 1
  assert 'no cluster was started' in capsys.readouterr().err


def test_failure_line_keeps_the_cause_and_drops_traces():
  message = ('Pipeline X failed in state FAILED: java.lang.RuntimeException:'
             ' featurize worker pool: boom\n\tat org.apache.Foo(Foo.java:1)')
  assert launch.failure_line(message) == (
      'Pipeline X failed in state FAILED: java.lang.RuntimeException: '
      'featurize worker pool: boom')
  assert len(launch.failure_line('x' * 5000)) == 600
  assert 'no message' in launch.failure_line('')


def test_failure_line_of_a_worker_traceback_is_its_exception():
  """A local worker process reports its error as a traceback in text: the
  line is the exception at its end, not "Traceback (most recent...)"."""
  message = ('Traceback (most recent call last):\n'
             '  File "apache_beam/runners/common.py", line 1, in process\n'
             '    raise ValueError(x)\n'
             'ValueError: first\n\n'
             'During handling of the above exception, another exception '
             'occurred:\n\n'
             'Traceback (most recent call last):\n'
             '  File "transforms/extract/gpu/on_device.py", line 2, in '
             '_finish\n'
             'RuntimeError: CUDA error: out of memory [while running '
             "'ExtractOnDevice']\n")
  assert launch.failure_line(message) == (
      "RuntimeError: CUDA error: out of memory [while running "
      "'ExtractOnDevice']")


def test_a_setup_killed_half_way_leaves_nothing_that_looks_finished(
    tmp_path):
  final = str(tmp_path / 'home' / 'flink-1.19.3')
  with pytest.raises(RuntimeError):
    with distribution.assembled(final, '.flink-') as staging:
      open(os.path.join(staging, 'half'), 'w').close()
      raise RuntimeError('killed')
  assert os.listdir(tmp_path / 'home') == []
  with distribution.assembled(final, '.flink-') as staging:
    open(os.path.join(staging, 'whole'), 'w').close()
  assert os.listdir(tmp_path / 'home') == ['flink-1.19.3']
  assert os.listdir(final) == ['whole']
