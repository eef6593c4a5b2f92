"""The refresh plan and fingerprints, as pure functions."""
import dataclasses

from apache_beam.io.filesystem import FileMetadata

from pipeline import options
from pipeline.refresh import fingerprints, versions
from pipeline.refresh.plan import make_plan


def _entry(path, fingerprint, model='m1', images=3):
  return {'path': path, 'fingerprint': fingerprint, 'model_fingerprint': model,
          'images': images}


def test_plan_sorts_shards_into_reused_new_changed_and_removed():
  latest = {'version': 'v000002-x', 'shards': [
      _entry('a', 'f1'), _entry('b', 'f2'), _entry('c', 'f3'),
      _entry('d', 'f4', model='m0')]}
  plan = make_plan({'a': 'f1', 'b': 'f2-new', 'd': 'f4', 'e': 'f5'}, 'm1',
                   latest)
  assert [e['path'] for e in plan.reused] == ['a']
  assert plan.new == {'e': 'f5'}
  assert plan.changed == {'b': 'f2-new', 'd': 'f4'}  # d: other model
  assert plan.removed == ['c']
  assert plan.parent == 'v000002-x' and plan.images_reused == 3
  assert plan.to_process == {'b': 'f2-new', 'd': 'f4', 'e': 'f5'}
  assert not plan.is_noop
  assert plan.summary().startswith(
      'plan: 1 shards reused (3 images), 1 new, 2 changed, 1 removed; '
      '3 shards to read')
  same = make_plan({'a': 'f1'}, 'm1', {'version': 'v1', 'shards': [
      _entry('a', 'f1')]})
  assert same.is_noop
  first = make_plan({'a': 'f1'}, 'm1', None)
  assert first.new == {'a': 'f1'} and first.parent is None


def test_shard_fingerprint_is_what_the_filesystem_knows():
  one = FileMetadata('gs://b/a.tar', 100, 1700000000.25)
  assert fingerprints.shard_fingerprint(one) == (
      'size=100,mtime=1700000000.250000')
  later = FileMetadata('x', 100, 1700000001.0)
  assert fingerprints.shard_fingerprint(later) != (
      fingerprints.shard_fingerprint(one))
  larger = FileMetadata('x', 101, 1700000000.25)
  assert fingerprints.shard_fingerprint(larger) != (
      fingerprints.shard_fingerprint(one))


def test_model_fingerprint_changes_with_what_changes_features_only():
  def job(*flags):
    return options.parse_run_args(['--input', 'x', '--output', 'y',
                                   '--weights', 'random', *flags]).job
  base = fingerprints.model_fingerprint(job())
  for flags in (('--layer', 'block4_pool'), ('--pooling', 'avg'),
                ('--precision', 'bfloat16'), ('--resize', 'squash'),
                ('--image-size', '192'), ('--max-pixels', '1000'),
                ('--image-feature', 'jpeg')):
    assert fingerprints.model_fingerprint(job(*flags)) != base, flags
  for flags in (('--batch-size', '3'), ('--max-error-fraction', '0.5'),
                ('--large-model',)):
    assert fingerprints.model_fingerprint(job(*flags)) == base, flags
  hashed = job()
  hashed = dataclasses.replace(hashed, model=dataclasses.replace(
      hashed.model, weights='w.h5', weights_sha256='abc'))
  other = dataclasses.replace(hashed, model=dataclasses.replace(
      hashed.model, weights_sha256='abd'))
  assert (fingerprints.model_fingerprint(hashed)
          != fingerprints.model_fingerprint(other))


def test_versions_are_numbered_after_their_parent():
  import datetime
  now = datetime.datetime(2026, 11, 29, 0, 15, tzinfo=datetime.timezone.utc)
  assert versions.next_version(None, now) == 'v000001-20261129T001500Z'
  assert versions.next_version('v000041-20261128T001500Z', now) == (
      'v000042-20261129T001500Z')


def test_the_staged_plan_reads_back_as_written():
  from pipeline.refresh.plan import StagedPlan
  from pipeline.refresh.versions import Pointer
  staged = StagedPlan(
      version='v000002-x', refresh='host-1-abc', parent='v000001-x',
      parent_pointer=Pointer('v000001-x', 17), model_fingerprint='m',
      input_pattern='in/*.tfrecord', describe={'layer': 'block5_pool'},
      max_error_fraction=0.1, reused=[{'path': 'in/a', 'images': 3}],
      to_process={'in/b': 'size=1,mtime=2'}, keep=3)
  again = StagedPlan.from_json(staged.to_json())
  assert again == staged
  assert isinstance(again.parent_pointer, Pointer)
  first = dataclasses.replace(staged, parent=None, parent_pointer=None,
                              keep=None)
  assert StagedPlan.from_json(first.to_json()) == first
