"""``featurize refresh`` end to end on the DirectRunner, on local disk.

A dataset of small TFRecord shards (real photos, one corrupt record) goes
through a series of refreshes: first version, shards added, one rewritten,
one deleted, nothing new, another layer. After each, the latest version
must equal a from-scratch ``featurize run`` over the same inputs, and the
pipeline must have read the images of the new and changed shards only.
"""
import glob
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pipeline import cli, options
from pipeline.refresh import refresh_job, versions
from tests.support.outputs import read_errors, read_outputs
from tests.support.paths import ROOT
from tests.support.refresh_data import (IMAGES_PER_SHARD, JOB, LOCAL,
                                        do_refresh, write_shard)
from transforms.coordination import output_lock as lock
from transforms.extract import models
from transforms.write.output_files import TooManyErrors




def from_scratch(tmp_path, pattern, name, *extra):
  out = str(tmp_path / f'scratch-{name}')
  assert cli.main(['run', '--config', LOCAL, '--input', pattern,
                   '--output', out, *JOB, *extra]) == 0
  return read_outputs(out), read_errors(out)


def read_version(root, manifest):
  """The version's records, through its manifest (never by globbing)."""
  import tensorflow as tf
  spec = {'key': tf.io.FixedLenFeature([], tf.string),
          'features': tf.io.VarLenFeature(tf.float32),
          'label': tf.io.VarLenFeature(tf.int64)}
  records = {}
  paths = [versions.path(root, p) for p in versions.files_of(manifest)]
  for raw in tf.data.TFRecordDataset(paths):
    example = tf.io.parse_single_example(raw, spec)
    key = example['key'].numpy().decode()
    assert key not in records, f'duplicate key {key}'
    label = tf.sparse.to_dense(example['label']).numpy()
    records[key] = (tf.sparse.to_dense(example['features']).numpy(),
                    int(label[0]) if len(label) else None)
  errors = []
  for p in versions.files_of(manifest, 'errors'):
    with open(versions.path(root, p)) as f:
      errors.extend(json.loads(line) for line in f)
  return records, errors


def assert_same(root, manifest, scratch):
  ours, our_errors = read_version(root, manifest)
  theirs, their_errors = scratch
  assert set(ours) == set(theirs)
  for key, (features, label) in theirs.items():
    assert ours[key][1] == label, key
    np.testing.assert_allclose(ours[key][0], features.reshape(-1),
                               rtol=1e-5, atol=1e-5, err_msg=key)
  def order(e):
    return json.dumps(e, sort_keys=True)
  assert sorted(our_errors, key=order) == sorted(their_errors, key=order)


@pytest.fixture
def dataset(tmp_path):
  shards = tmp_path / 'shards'
  shards.mkdir()
  for index in range(4):
    write_shard(str(shards), index, corrupt=index == 3)
  return str(tmp_path / 'features'), str(shards / '*.tfrecord'), shards


def test_refreshes_read_only_new_and_changed_shards(dataset, tmp_path):
  root, pattern, shards = dataset
  first = do_refresh(root, pattern)
  assert first.published and first.manifest['version'].startswith('v000001-')
  assert first.images_read == 4 * IMAGES_PER_SHARD
  assert_same(root, first.manifest, from_scratch(tmp_path, pattern, 'v1'))

  for index in (4, 5):
    write_shard(str(shards), index)
  added = do_refresh(root, pattern)
  assert (len(added.plan.new), len(added.plan.reused)) == (2, 4)
  assert added.images_read == 2 * IMAGES_PER_SHARD
  assert added.manifest['parent'] == first.manifest['version']
  assert_same(root, added.manifest, from_scratch(tmp_path, pattern, 'v2'))
  # Reused shards' files are referenced, not copied.
  reused = {e['path']: e for e in added.manifest['shards']
            if e['version'] == first.manifest['version']}
  assert len(reused) == 4

  write_shard(str(shards), 1, variant=1)  # rewritten with other photos
  changed = do_refresh(root, pattern)
  assert list(changed.plan.changed) == [str(shards / 'part-00001.tfrecord')]
  assert changed.images_read == IMAGES_PER_SHARD
  assert_same(root, changed.manifest, from_scratch(tmp_path, pattern, 'v3'))

  os.remove(shards / 'part-00002.tfrecord')
  removed = do_refresh(root, pattern)
  assert removed.plan.removed == [str(shards / 'part-00002.tfrecord')]
  assert removed.images_read == 0  # no pipeline at all
  assert_same(root, removed.manifest, from_scratch(tmp_path, pattern, 'v4'))

  nothing = do_refresh(root, pattern)
  assert not nothing.published and nothing.images_read == 0
  assert versions.read_pointer(root).version == removed.manifest['version']

  relayered = do_refresh(root, pattern, '--layer', 'block1_pool')
  assert len(relayered.plan.changed) == 5 and not relayered.plan.reused
  assert relayered.images_read == 5 * IMAGES_PER_SHARD
  assert_same(root, relayered.manifest,
              from_scratch(tmp_path, pattern, 'v5', '--layer', 'block1_pool'))
  assert not os.path.exists(os.path.join(root, versions.STAGING)) or not (
      os.listdir(os.path.join(root, versions.STAGING)))


def test_every_file_holds_one_shard_and_the_plan_comes_first(dataset,
                                                             capsys):
  root, pattern, _ = dataset
  job = ['refresh', '--config', LOCAL, '--input', pattern, '--dataset', root,
         *JOB]
  assert cli.main(job + ['--plan-only']) == 0
  assert 'plan: 0 shards reused (0 images), 4 new, 0 changed, 0 removed' in (
      capsys.readouterr().out)
  assert versions.read_pointer(root) is None  # the plan only
  assert cli.main(job) == 0
  manifest = versions.latest(root)
  for entry in manifest['shards']:
    records, _ = read_version(root, {'shards': [entry]})
    prefix = 'shard' + entry['path'][-10]  # part-0000N.tfrecord -> N
    assert records and all(k.startswith(prefix) for k in records), entry
  assert manifest['counts']['errors'] == 1  # the corrupt record


def test_one_refresh_at_a_time(dataset, capsys):
  root, pattern, _ = dataset
  held = lock.acquire(root, 'first-refresh')
  with pytest.raises(lock.Locked, match='being refreshed by refresh '
                     'first-refresh') as refused:
    lock.acquire(root, 'second')
  assert f'host {held["host"]}' in str(refused.value)
  job = ['refresh', '--config', LOCAL, '--input', pattern, '--dataset', root,
         *JOB]
  assert cli.main(job) == 1
  assert 'being refreshed by refresh first-refresh' in capsys.readouterr().err
  assert versions.read_pointer(root) is None
  lock.release(root, 'someone-else')  # not the holder: nothing happens
  with pytest.raises(lock.Locked):
    lock.acquire(root, 'second')
  # A lock whose holder cannot be known dead (this process is alive; a
  # job on Dataflow is not watched) waits for the timeout; a watched
  # holder's lock goes as soon as its process is gone.
  assert not lock.holder_is_gone(held)
  assert not lock.holder_is_gone({**held, 'pid': 2 ** 22 + 1, 'watch': False})
  assert lock.holder_is_gone({**held, 'pid': 2 ** 22 + 1, 'watch': True})
  assert lock.holder_is_gone({**held, 'pid_start': -1, 'watch': True})
  assert not lock.holder_is_gone({**held, 'pid_start': -1, 'watch': True,
                                  'host': 'another-host'})
  # A killed refresh's lock: taken over once stale, or broken at once.
  assert lock.acquire(root, 'third', timeout_s=0)['holder'] == 'third'
  assert lock.acquire(root, 'fourth', break_lock=True)['holder'] == 'fourth'
  lock.release(root, 'fourth')
  assert cli.main(job) == 0  # and the refresh releases its own lock
  assert not os.path.exists(os.path.join(root, lock.LOCK))


def test_readers_history_and_keep(dataset, tmp_path, capsys):
  root, pattern, shards = dataset
  v1 = do_refresh(root, pattern).manifest
  write_shard(str(shards), 4)
  v2 = do_refresh(root, pattern).manifest
  capsys.readouterr()

  assert cli.main(['files', root]) == 0
  listed = capsys.readouterr().out.split()
  assert listed == [versions.path(root, p) for p in versions.files_of(v2)]
  assert all(os.path.isfile(p) for p in listed) and len(listed) == 5
  assert cli.main(['files', root, '--version', v1['version'], '--kind',
                   'errors']) == 0
  assert capsys.readouterr().out.split() == [
      versions.path(root, p) for p in versions.files_of(v1, 'errors')]
  assert cli.main(['history', root]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert [line.split()[0] for line in lines] == [v1['version'],
                                                 v2['version']]
  assert lines[-1].endswith('<- LATEST') and '5 shards, 16 images' in lines[-1]
  assert '  VGG16 block2_pool (fingerprint ' in lines[-1]

  # The TensorFlow-free reader follows the pointer, or a named version.
  script = ('import sys, json; from pipeline.read_features import '
            'iter_features\nprint(json.dumps([sorted(r.key for r in '
            'iter_features(sys.argv[1], v)) for v in (None, sys.argv[2])]))')
  result = subprocess.run([sys.executable, '-c', script, root,
                           v1['version']], check=True, capture_output=True,
                          text=True)
  latest_keys, v1_keys = json.loads(result.stdout)
  assert latest_keys == sorted(read_version(root, v2)[0])
  assert v1_keys == sorted(read_version(root, v1)[0])
  assert len(latest_keys) == len(v1_keys) + IMAGES_PER_SHARD

  # --keep 1 after a third version: v1's and v2's manifests go, and of
  # their files only those v3 does not list (shard 1's, rewritten in v3).
  write_shard(str(shards), 1, variant=1)
  job = options.parse_run_args(['--config', LOCAL, '--input', pattern,
                                '--output', root, *JOB])
  v3 = refresh_job.refresh(job.job, job.beam_args, keep=1,
                           log=lambda _: None).manifest
  assert versions.list_versions(root) == [v3['version']]
  kept = set(versions.files_of(v3) + versions.files_of(v3, 'errors'))
  assert all(os.path.exists(versions.path(root, p)) for p in kept)
  older = set(versions.files_of(v1) + versions.files_of(v1, 'errors')
              + versions.files_of(v2) + versions.files_of(v2, 'errors'))
  assert len(older - kept) == 1  # shard 1's first features file
  for p in older:
    assert os.path.exists(versions.path(root, p)) == (p in kept), p
  assert read_version(root, v3)[0]  # and the latest reads whole


def test_a_reader_keeps_reading_its_version_while_a_refresh_publishes(
    dataset):
  root, pattern, shards = dataset
  v1 = do_refresh(root, pattern).manifest
  # The TensorFlow-free reader, in a process of its own: it opens the
  # dataset, reads one record, and waits while a refresh publishes.
  script = ('import sys, json\nfrom pipeline.read_features import '
            'iter_features\nrecords = iter_features(sys.argv[1])\n'
            'keys = [next(records).key]\nprint("READY", flush=True)\n'
            'sys.stdin.readline()\nkeys += [r.key for r in records]\n'
            'print(json.dumps(keys))')
  reader = subprocess.Popen([sys.executable, '-c', script, root],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
  assert reader.stdout.readline().strip() == 'READY'
  write_shard(str(shards), 4)
  write_shard(str(shards), 0, variant=1)
  v2 = do_refresh(root, pattern).manifest
  assert versions.read_pointer(root).version == v2['version']
  keys, _ = reader.communicate('go\n', timeout=60)
  assert sorted(json.loads(keys)) == sorted(read_version(root, v1)[0])
  assert set(read_version(root, v2)[0]) != set(read_version(root, v1)[0])


def test_no_wait_returns_once_the_job_is_accepted(dataset, capsys):
  root, pattern, _ = dataset
  assert cli.main(['refresh', '--config', LOCAL, '--input', pattern,
                   '--dataset', root, *JOB, '--no-wait']) == 0
  assert 'submitted' in capsys.readouterr().out
  # FnApiRunner runs the job within run(): its last step has published
  # the version and released the lock by the time the launcher returns.
  assert versions.read_pointer(root).version.startswith('v000001-')
  assert not os.path.exists(os.path.join(root, lock.LOCK))


def test_the_readme_tf_data_recipe_reads_a_version(dataset):
  """docs/refresh.md's tf.data recipe, run as printed, on a local
  dataset."""
  root, pattern, shards = dataset
  v1 = do_refresh(root, pattern).manifest
  write_shard(str(shards), 4)
  v2 = do_refresh(root, pattern).manifest
  with open(os.path.join(ROOT, 'docs', 'refresh.md')) as f:
    blocks = re.findall(r'```python\n(.*?)```', f.read(), re.S)
  recipe, = [textwrap.dedent(b) for b in blocks if 'def dataset_files' in b]
  assert "'gs://my-bucket/features'" in recipe
  scope = {}
  exec(recipe.replace("'gs://my-bucket/features'", repr(root)), scope)  # pylint: disable=exec-used
  keys = [r['key'].numpy().decode() for r in scope['ds']]
  assert sorted(keys) == sorted(read_version(root, v2)[0])
  assert scope['dataset_files'](root, v1['version']) == [
      versions.path(root, p) for p in versions.files_of(v1)]


def test_a_refresh_with_too_many_errors_keeps_its_error_lines(dataset):
  """The refresh fails and names files that exist; they hold the error
  lines, outlive the next (successful) refresh, and give way to the next
  failed one's."""
  root, pattern, shards = dataset
  with pytest.raises(TooManyErrors) as failed:
    do_refresh(root, pattern, '--max-error-fraction', '0')
  message = str(failed.value)
  shown = re.search(r'see (\S+\*\.jsonl)', message).group(1)
  kept = glob.glob(shown)
  assert kept and versions.read_pointer(root) is None, message
  lines = [json.loads(line) for path in kept for line in open(path)]
  assert [os.path.basename(line['key']) for line in lines] == [
      'part-00003.tfrecord:3']
  # Published anyway by a run that allows them: still there.
  assert do_refresh(root, pattern).manifest['counts']['errors'] == 1
  assert all(os.path.exists(path) for path in kept)
  # The next failure's lines replace them.
  write_shard(str(shards), 4, corrupt=True)
  with pytest.raises(TooManyErrors) as again:
    do_refresh(root, pattern, '--max-error-fraction', '0')
  newer = glob.glob(re.search(r'see (\S+\*\.jsonl)',
                              str(again.value)).group(1))
  assert newer and not any(os.path.exists(path) for path in kept)
  assert len(glob.glob(os.path.join(root, versions.FAILED, '*'))) == 1


def test_another_model_recomputes_every_shard_and_never_mixes(dataset):
  root, pattern, _ = dataset
  first = do_refresh(root, pattern)
  layer = ('--layer',
           models.catalog.find('mobilenetv3small').feature_layer)
  other = do_refresh(root, pattern, '--model', 'MobileNetV3Small', *layer)
  assert len(other.plan.changed) == 4 and not other.plan.reused
  assert other.images_read == 4 * IMAGES_PER_SHARD
  assert other.manifest['describe']['model'] == 'MobileNetV3Small'
  assert other.manifest['model_fingerprint'] != first.manifest[
      'model_fingerprint']
  records, _ = read_version(root, other.manifest)
  assert {features.shape for features, _ in records.values()} == {(576,)}
  same = do_refresh(root, pattern, '--model', 'mobilenetv3small', *layer)
  assert not same.published and same.images_read == 0
  back = do_refresh(root, pattern)  # VGG16 again: every shard again
  assert len(back.plan.changed) == 4 and not back.plan.reused
