"""featurize on a real local Apache Flink cluster.

``featurize flink-local`` starts a JobManager, two TaskManagers with two
slots each, Beam's Flink job server and one worker pool per TaskManager;
``featurize run --config run_configs/flink.yaml`` runs the job there, over
real photos in the three input formats with bad images among them. The
same inputs go through the DirectRunner (FnApiRunner), and the two outputs
must agree. The last test kills a TaskManager in the middle of a job.
"""
import glob
import json
import os
import re
import signal
import site
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks import dataset as bench_dataset
from benchmarks.measure import TreePeaks
from pipeline import demo
from pipeline.runners.flink_local import cluster, services
from tests.support import datasets, flink_cluster
from tests.support.outputs import read_errors, read_outputs

RUN_TIMEOUT_S = 420
JOB_ARGS = ('--max-error-fraction', '1', '--batch-size', '4')
# How long a restarted job waits for slots: long enough for a replacement
# TaskManager to start on a busy machine, short enough for the test where
# none comes.
SLOT_REQUEST_TIMEOUT_MS = 30_000


@pytest.fixture(scope='module')
def flink(tmp_path_factory):
  with flink_cluster.running_cluster(
      str(tmp_path_factory.mktemp('flink-cluster')),
      slot_request_timeout_ms=SLOT_REQUEST_TIMEOUT_MS) as settings:
    yield settings


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp('flink-inputs')
  return datasets.write_dataset(str(root / 'input'))


@pytest.fixture(scope='module')
def direct_run(inputs, notop_weights, tmp_path_factory):
  """The same job on the DirectRunner, timed the same way (a process)."""
  out = str(tmp_path_factory.mktemp('direct') / 'out')
  start = time.monotonic()
  result = subprocess.run(
      [flink_cluster.FEATURIZE, 'run', '--config', demo.LOCAL_CONFIG,
       '--input', os.path.join(inputs.root, '**'), '--output', out,
       '--weights', notop_weights, *JOB_ARGS],
      cwd=flink_cluster.ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return out, time.monotonic() - start


class FlinkRun:
  """One featurize run on the cluster, with what was seen around it."""

  def __init__(self, settings, inputs, weights, out):
    logs = flink_cluster.taskmanager_logs(settings)
    sizes = flink_cluster.log_sizes(logs)
    roots = {name: flink_cluster.pid_of(settings, name)
             for name in services.service_names(settings)
             if name.startswith(('tm-', 'pool-'))}
    with TreePeaks(roots) as peaks:
      run = flink_cluster.FeaturizeRun(settings, [
          '--input', os.path.join(inputs.root, '**'), '--output', out,
          '--weights', weights, *JOB_ARGS])
      self.result = run.wait(RUN_TIMEOUT_S)
    self.out = out
    self.peaks = peaks.peaks_mb()
    self.worker_logs = flink_cluster.read_since(sizes, logs)


@pytest.fixture(scope='module')
def flink_run(flink, inputs, notop_weights, tmp_path_factory):
  run = FlinkRun(flink, inputs, notop_weights,
                 str(tmp_path_factory.mktemp('flink-out') / 'out'))
  assert run.result.returncode == 0, run.result.stderr[-3000:]
  return run


def test_status_shows_the_cluster_and_its_jobs(flink, flink_run):
  shown = flink_cluster.flink_local(flink, 'status').stdout
  for name in services.service_names(flink):
    assert re.search(rf'^  {name} +running, pid \d+', shown, re.M), shown
  assert '2 TaskManagers, 4 slots' in shown
  assert re.search(r'finished [1-9]', shown), shown


def test_a_memory_budget_plans_from_the_clusters_own_slots(flink):
  """--memory-budget on Flink: the launcher reads the TaskManagers' slots
  from the running cluster's REST API (two each: a thread for each in the
  one SDK worker process of a TaskManager) and plans within the size."""
  from pipeline import options  # pylint: disable=import-outside-toplevel
  parsed = options.parse_run_args([
      '--config', os.path.join(flink_cluster.ROOT, 'run_configs',
                               'flink.yaml'),
      f'--flink_master={flink.rest_url}', '--memory-budget', '2GiB',
      '--input', 'in/*', '--output', 'out'])
  plan = parsed.job.memory_plan
  assert plan.threads == 2 and plan.budget == 2 << 30
  assert '2 slot(s) a TaskManager' in plan.source
  assert plan.predicted_peak <= plan.budget


def test_the_job_finishes_on_flink(flink, flink_run):
  jobs = flink_run.result.jobs
  assert list(jobs.values()) == ['FINISHED'], jobs
  (jid,) = jobs
  # Both TaskManagers ran the job's tasks.
  detail = cluster.rest(flink, f'/jobs/{jid}')
  used = set()
  for vertex in detail['vertices']:
    managers = cluster.rest(flink, f'/jobs/{jid}/vertices/{vertex["id"]}'
                            '/taskmanagers')
    used.update(tm['taskmanager-id'] for tm in managers['taskmanagers'])
  assert used == {'tm-1', 'tm-2'}


def test_same_features_and_error_lines_as_the_direct_runner(
    flink_run, direct_run, inputs):
  direct_out, _ = direct_run
  ours, theirs = read_outputs(flink_run.out), read_outputs(direct_out)
  assert set(ours) == set(theirs) == set(inputs.images)
  for key, (features, label) in theirs.items():
    assert ours[key][1] == label, key
    assert ours[key][0].shape == features.shape
    scale = max(1.0, float(np.abs(features).max()))
    np.testing.assert_allclose(ours[key][0], features, rtol=1e-4,
                               atol=1e-4 * scale, err_msg=key)

  def lines(out):
    return sorted(read_errors(out), key=lambda e: json.dumps(e,
                                                            sort_keys=True))
  assert lines(flink_run.out) == lines(direct_out)
  assert {e['key']: e['error_type'] for e in lines(flink_run.out)} == (
      inputs.errors)


def test_manifest_and_success(flink_run, direct_run):
  out = flink_run.out
  assert os.path.exists(os.path.join(out, '_SUCCESS'))
  ours = json.load(open(os.path.join(out, 'manifest.json')))
  theirs = json.load(open(os.path.join(direct_run[0], 'manifest.json')))
  assert ours['status'] == 'succeeded'
  assert ours['counts'] == theirs['counts']
  assert ours['input_shards'] == theirs['input_shards']
  for field in ('model', 'layer', 'weights', 'preprocessing'):
    assert ours[field] == theirs[field]
  shards = ours['feature_shards']
  assert sum(s['records'] for s in shards) == ours['counts']['features']
  on_disk = sorted(os.path.basename(p)
                   for p in glob.glob(os.path.join(out, 'features-*')))
  assert on_disk == sorted(s['path'] for s in shards)
  assert not glob.glob(os.path.join(out, '.temp-*'))


def test_model_loaded_once_per_worker_process(flink, flink_run):
  loads = flink_cluster.reported_model_loads(flink_run.result.stdout)
  by_log = flink_cluster.model_loads_by_log(flink_run.worker_logs)
  pids = [pid for found in by_log.values() for pid in found]
  # Beam's metric and the workers' own log lines agree, and no worker
  # process loaded the model twice.
  assert loads == len(pids) and len(set(pids)) == len(pids), (loads, by_log)
  # One SDK worker per TaskManager (sdk_worker_parallelism: 1), each with
  # its model; not one load per bundle (the run has 9 batches of 4 in
  # bundles of many sizes).
  assert loads == flink.taskmanagers, by_log
  assert all(len(found) == 1 for found in by_log.values()), by_log


def test_memory_and_time_are_recorded(flink_run, direct_run):
  peaks = flink_run.peaks
  report = {'flink_wall_s': round(flink_run.result.wall_s, 1),
            'direct_runner_wall_s': round(direct_run[1], 1), 'peaks': peaks}
  print('Flink run:', json.dumps(report))
  for name, peak in peaks.items():
    if name.startswith('pool-'):
      # The pool itself plus one SDK worker holding VGG16 and a few
      # batches; a worker holding a shard or the dataset would be larger.
      assert 400 < peak['largest_process_mb'] < 2500, (name, peak)
    else:
      # A TaskManager stays inside its configured process size.
      assert peak['tree_mb'] < 2560, (name, peak)


def test_a_worker_pool_without_featurize_fails_the_run_quickly(
    flink, inputs, tmp_path):
  """Pools whose Python lacks featurize: the job fails and says why,
  instead of waiting forever for workers that never start."""
  python = _python_without_featurize(str(tmp_path / 'venv'))
  flink_cluster.flink_local(flink, 'stop', 'pool-1', 'pool-2')
  try:
    started = flink_cluster.flink_local(flink, 'start', '--worker-python',
                                        python)
    assert 'cannot import featurize' in started.stderr  # a warning
    out = str(tmp_path / 'out')
    run = flink_cluster.FeaturizeRun(flink, [
        '--input', os.path.join(inputs.root, 'files', '*.jpg'),
        '--output', out, '--weights', 'random'])
    # ~40 s on an idle machine (Flink's restart attempts included); the
    # margin is for a loaded one. Without the check it would never end.
    result = run.wait(timeout_s=300)
  finally:
    flink_cluster.flink_local(flink, 'stop', 'pool-1', 'pool-2')
    flink_cluster.flink_local(flink, 'start', '--worker-python',
                              sys.executable)
  assert result.returncode == 4  # the job failed
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('featurize: error: ') and 'FAILED' in last, last
  assert f'worker Python {python} cannot import featurize' in last, last
  assert "No module named 'pipeline'" in last, last
  assert list(result.jobs.values()) == ['FAILED']
  assert not os.path.exists(os.path.join(out, '_SUCCESS'))


def _python_without_featurize(folder: str) -> str:
  """A Python whose environment has Beam and TensorFlow but not featurize:
  this environment's site-packages, added by a .pth file (a folder added
  that way does not run its own .pth files, featurize's editable-install
  hook among them)."""
  subprocess.run([sys.executable, '-m', 'venv',
                  '--without-pip', folder], check=True)
  python = os.path.join(folder, 'bin', 'python')
  target = subprocess.run(
      [python, '-c', 'import sysconfig; print(sysconfig.get_paths()'
       '["purelib"])'], check=True, capture_output=True,
      text=True).stdout.strip()
  with open(os.path.join(target, 'project-deps.pth'), 'w') as f:
    f.write('\n'.join(site.getsitepackages()) + '\n')
  return python


def _input_with_extra_images(root, extra: int = 80):
  """The test photos and bad inputs, plus ``extra`` more images so that a
  job is still running when a test kills a TaskManager."""
  ds = datasets.write_dataset(str(root), bad=True)
  os.makedirs(root / 'more')
  bench_dataset.write_tfrecord_shard(str(root / 'more' / 'extra.tfrecord'),
                                     extra)
  return ds, set(ds.images) | {f'img-{i:05d}.jpg' for i in range(extra)}


def _kill_taskmanager_mid_job(flink, run, out: str, name: str) -> int:
  """Waits until the job has written features, SIGKILLs TaskManager
  ``name``, and waits until Flink has noticed; returns the killed PID."""
  deadline = time.monotonic() + 240
  while not glob.glob(os.path.join(out, '.temp-*', 'features-*')):
    assert run.process.poll() is None, 'the run ended before the kill'
    assert time.monotonic() < deadline, 'no features written in 240 s'
    time.sleep(0.2)
  victim = flink_cluster.pid_of(flink, name)
  os.kill(victim, signal.SIGKILL)
  deadline = time.monotonic() + 60
  while ((cluster.rest(flink, '/overview') or {}).get('taskmanagers')
         != flink.taskmanagers - 1):
    assert time.monotonic() < deadline, 'Flink did not notice the loss'
    time.sleep(0.5)
  return victim


def test_a_killed_taskmanager_is_replaced_and_the_job_finishes(
    flink, notop_weights, tmp_path):
  """SIGKILL of a TaskManager mid-job: Flink restarts the whole job once a
  replacement TaskManager has registered (`flink-local start` brings it
  back, as Kubernetes restarts a pod); the output is complete, with no
  duplicate key and no temporary file left."""
  ds, expected = _input_with_extra_images(tmp_path / 'input')
  out = str(tmp_path / 'out')
  run = flink_cluster.FeaturizeRun(flink, [
      '--input', str(tmp_path / 'input' / '**'), '--output', out,
      '--weights', notop_weights, *JOB_ARGS])
  victim = _kill_taskmanager_mid_job(flink, run, out, 'tm-1')
  # No flags: `start` completes the cluster with the settings it has.
  flink_cluster.flink_local(flink, 'start')
  assert flink_cluster.pid_of(flink, 'tm-1') != victim
  result = run.wait(RUN_TIMEOUT_S)
  assert result.returncode == 0, result.stderr[-3000:]
  assert list(result.jobs.values()) == ['FINISHED']
  (jid,) = result.jobs
  history = cluster.rest(flink, f'/jobs/{jid}/exceptions')
  assert history['exceptionHistory']['entries'], 'no failure was recorded'
  records = read_outputs(out)  # raises on a duplicate key
  assert set(records) == expected
  errors = read_errors(out)
  assert {e['key']: e['error_type'] for e in errors} == ds.errors
  assert len(errors) == len(ds.errors)
  manifest = json.load(open(os.path.join(out, 'manifest.json')))
  assert manifest['counts'] == {'images_in': len(expected) + len(ds.errors),
                                'features': len(expected),
                                'errors': len(ds.errors)}
  assert os.path.exists(os.path.join(out, '_SUCCESS'))
  assert not glob.glob(os.path.join(out, '.temp-*'))


def test_without_a_replacement_taskmanager_the_run_fails_loudly(
    flink, tmp_path):
  """The restarted job needs every slot; with one TaskManager gone for
  good it fails once its restarts have waited for slots in vain: no
  _SUCCESS, no manifest, one error line."""
  _input_with_extra_images(tmp_path / 'input')
  out = str(tmp_path / 'out')
  run = flink_cluster.FeaturizeRun(flink, [
      '--input', str(tmp_path / 'input' / '**'), '--output', out,
      '--weights', 'random', *JOB_ARGS])
  try:
    _kill_taskmanager_mid_job(flink, run, out, 'tm-2')
    result = run.wait(RUN_TIMEOUT_S)
  finally:
    flink_cluster.flink_local(flink, 'start')
  assert result.returncode == 4  # the job failed
  assert list(result.jobs.values()) == ['FAILED']
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('featurize: error: ') and 'FAILED' in last, last
  assert not os.path.exists(os.path.join(out, '_SUCCESS'))
  assert not os.path.exists(os.path.join(out, 'manifest.json'))
