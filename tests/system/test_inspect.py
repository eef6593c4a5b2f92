"""``featurize inspect``: the report and the plot, on real outputs.

The module's outputs are made by the real pipeline over real photos (with
corrupt images and shards): a run, a run that failed with too many
errors, a dataset refreshed twice, and a run killed while publishing.
The pipeline runs in this process and imports TensorFlow, which cannot
share a process with the ``tfrecord`` package that inspect reads features
with: so inspect runs in a subprocess, as users run it.
"""
import collections
import io
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline import cli, demo
from pipeline.inspection import plot as inspect_plot, summary as inspect_summary
from pipeline.inspection.inspect_output import count_complete_records
from pipeline.inspection.summary import ErrorTally, FileCount
from pipeline.read_features import Features
from pipeline.refresh import versions
from tests.support import datasets
from tests.support.paths import ROOT
from tests.support.refresh_data import write_shard
from transforms.read import tfrecord_framing


JOB = ('--config', demo.LOCAL_CONFIG, '--weights', 'random', '--layer',
       'block1_pool', '--pooling', 'avg', '--batch-size', '8')


def featurize(*args: str, env=None) -> subprocess.CompletedProcess:
  """``featurize ARGS`` in a fresh process (no TensorFlow there)."""
  return subprocess.run([sys.executable, '-m', 'pipeline.cli', *args],
                        cwd=ROOT, capture_output=True, text=True,
                        timeout=120, env={**os.environ, **(env or {})})


class Report:
  """The parts of a text report the tests check."""

  def __init__(self, text: str):
    self.text = text
    blocks = text.split('\n\n')
    self.rows = dict(re.split(r'\s{2,}', line.strip(), maxsplit=1)
                     for line in blocks[0].splitlines()[1:])
    self.groups = []  # (count, stage, error_type, examples)
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if line.startswith('errors by stage and type (')), len(lines))
    for line in lines[start + 2:]:
      if not line.strip():
        break
      count, stage, error_type, examples = line.split(maxsplit=3)
      self.groups.append((int(count.replace(',', '')), stage, error_type,
                          examples.removesuffix(', ...').split(', ')))

  def number(self, row: str) -> int:
    return int(self.rows[row].split()[0].replace(',', ''))


def inspect(*args: str, env=None) -> Report:
  result = featurize('inspect', *args, env=env)
  assert result.returncode == 0, result.stderr
  return Report(result.stdout)


def error_lines(paths):
  lines = []
  for path in paths:
    with open(path) as f:
      lines.extend(json.loads(line) for line in f)
  return lines


def expected_groups(lines):
  """(count, stage, error_type, first 3 keys) per group, from the lines."""
  keys = collections.defaultdict(list)
  for line in lines:
    keys[(line['stage'], line['error_type'])].append(line['key'])
  return sorted(((len(k), s, t, k[:3]) for (s, t), k in keys.items()),
                key=lambda g: (-g[0], g[1], g[2]))


@pytest.fixture(scope='module')
def outputs(tmp_path_factory):
  """A run, a failed run and a dataset (two refreshes), for real."""
  root = tmp_path_factory.mktemp('inspect')
  ds = datasets.write_dataset(str(root / 'input'))
  pattern = str(root / 'input' / '**')
  run = str(root / 'run')
  assert cli.main(['run', *JOB, '--input', pattern, '--output', run,
                   '--max-error-fraction', '1']) == 0
  failed = str(root / 'failed')
  assert cli.main(['run', *JOB, '--input', pattern, '--output', failed,
                   '--max-error-fraction', '0']) == 3  # too many errors
  shards = root / 'shards'
  shards.mkdir()
  for index in range(3):
    write_shard(str(shards), index, corrupt=index == 2)
  dataset = str(root / 'dataset')
  refresh = ['refresh', *JOB, '--input', str(shards / '*.tfrecord'),
             '--dataset', dataset, '--max-error-fraction', '1']
  assert cli.main(refresh) == 0
  write_shard(str(shards), 3)
  assert cli.main(refresh) == 0
  return collections.namedtuple('Outputs', 'ds input run failed dataset')(
      ds, pattern, run, failed, dataset)


def manifest_of(folder: str) -> dict:
  with open(os.path.join(folder, 'manifest.json')) as f:
    return json.load(f)


# The report, on real outputs.

def test_report_of_a_run_says_what_its_manifest_and_error_files_say(
    outputs):
  manifest = manifest_of(outputs.run)
  report = inspect(outputs.run)
  assert report.rows['status'].startswith('succeeded')
  counts = manifest['counts']
  assert report.number('images in') == counts['images_in']
  assert report.number('features') == counts['features'] == len(
      outputs.ds.images)
  assert report.number('errors') == counts['errors'] == len(outputs.ds.errors)
  assert f'({counts["errors"] / counts["images_in"]:.1%} of images in)' in (
      report.rows['errors'])
  assert report.rows['model'] == 'VGG16 block1_pool, avg pooling, float32'
  assert report.rows['weights'] == 'random (seed 0)'
  assert report.rows['preprocessing'] == (
      '224x224, center-crop (shorter side 256 first)')
  assert report.rows['feature shape'] == '[64]'
  assert report.rows['input'].startswith(
      f'{len(manifest["input_shards"])} shards')
  for shard in manifest['feature_shards'] + manifest['error_shards']:
    assert re.search(rf'^  {re.escape(shard["path"])}\s+{shard["records"]}$',
                     report.text, re.M), shard
  # Groups, counts, order and examples, from the error files themselves...
  lines = error_lines(os.path.join(outputs.run, s['path'])
                      for s in manifest['error_shards'])
  assert report.groups == expected_groups(lines)
  # ... and per type from what the test dataset was made to hold.
  by_type = collections.Counter()
  for count, _, error_type, _ in report.groups:
    by_type[error_type] += count
  assert by_type == collections.Counter(outputs.ds.errors.values())


def test_a_failed_run_is_reported_failed_with_its_errors(outputs):
  assert not os.path.exists(os.path.join(outputs.failed, '_SUCCESS'))
  manifest = manifest_of(outputs.failed)
  report = inspect(outputs.failed)
  assert report.rows['status'].startswith('FAILED: too many errors')
  assert 'no _SUCCESS' in report.rows['status']
  assert report.number('errors') == manifest['counts']['errors'] == len(
      outputs.ds.errors)
  lines = error_lines(os.path.join(outputs.failed, s['path'])
                      for s in manifest['error_shards'])
  assert report.groups == expected_groups(lines)


def test_a_dataset_root_reports_its_latest_version_or_the_one_asked(
    outputs):
  root = outputs.dataset
  latest = versions.read_pointer(root).version
  manifest = versions.read_manifest(root, latest)
  report = inspect(root)
  assert report.rows['status'] == f'published, version {latest} (LATEST)'
  assert report.rows['parent'] == manifest['parent']
  assert report.rows['model fingerprint'] == manifest['model_fingerprint']
  assert report.number('images in') == manifest['counts']['images_in'] == 13
  assert report.number('features') == manifest['counts']['features'] == 12
  assert report.number('errors') == manifest['counts']['errors'] == 1
  assert report.rows['input'].startswith('4 shards (1 read by this version: '
                                         '3 images')
  for entry in manifest['shards']:
    for f in entry['files']['features']:
      assert re.search(rf'^  {re.escape(f["path"])}\s+{f["records"]}$',
                       report.text, re.M)
  lines = error_lines(versions.path(root, p)
                      for p in versions.files_of(manifest, 'errors'))
  assert report.groups == expected_groups(lines)
  assert report.groups[0][2] == 'corrupt_record'

  first = manifest['parent']
  older = inspect(root, '--version', first)
  assert older.rows['status'] == (f'published, version {first} (not the '
                                  f'latest: LATEST is {latest})')
  assert older.rows['parent'] == 'none (first version)'
  assert older.number('images in') == 10


def test_a_path_without_an_output_is_a_one_line_error(tmp_path, outputs,
                                                      capsys):
  # In this process: without --plot, inspect reads no feature file.
  for args in ([str(tmp_path)], [str(tmp_path / 'missing')],
               [outputs.dataset, '--version', 'v999999-none'],
               [outputs.run, '--version', 'v000001']):
    assert cli.main(['inspect', *args]) == 2, args  # usage
    out, err = capsys.readouterr()
    assert out == ''
    assert re.fullmatch(r'featurize: error: [^\n]+\n', err), err
  assert 'holds no featurize output' in (
      cli.main(['inspect', str(tmp_path)]) and capsys.readouterr().err)


def test_a_killed_run_is_unfinished_and_its_files_are_counted(outputs,
                                                              tmp_path):
  out = str(tmp_path / 'killed')
  # Held between renaming the shards and writing the manifest, then killed.
  job = subprocess.Popen(
      [sys.executable, '-m', 'pipeline.cli', 'run', *JOB, '--input',
       outputs.input, '--output', out, '--max-error-fraction', '1'],
      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
      env={**os.environ, 'FEATURIZE_TEST_PAUSE_AT': 'publish_renamed:120'})
  try:
    deadline = time.time() + 90
    while not (os.path.isdir(out) and any(
        n.startswith('errors-') for n in os.listdir(out))):
      assert time.time() < deadline and job.poll() is None
      time.sleep(0.2)
  finally:
    job.send_signal(signal.SIGKILL)
    job.wait()
  assert not os.path.exists(os.path.join(out, 'manifest.json'))
  report = inspect(out)
  assert report.rows['status'].startswith('UNFINISHED: a run started here '
                                          'but never wrote its manifest')
  assert report.number('features') == len(outputs.ds.images)
  assert report.number('errors') == len(outputs.ds.errors)
  assert f'(host {socket.gethostname()}, pid {job.pid}' in report.text
  assert 'its process is gone: killed' in report.text


def test_leftovers_cut_short_count_whole_records_and_lines(outputs,
                                                           tmp_path):
  """What a kill in the middle of writing leaves: files cut anywhere."""
  out = tmp_path / 'cut'
  temp = out / '.temp-featurize-0123456789ab'
  temp.mkdir(parents=True)
  run = manifest_of(outputs.run)
  with open(os.path.join(outputs.run, run['feature_shards'][0]['path']),
            'rb') as f:
    data = f.read()
  ends = list(itertools.accumulate(
      12 + len(r.data) + 4 for r in tfrecord_framing.iter_records(
          io.BytesIO(data), 1 << 30)))
  (temp / 'features-aaaa').write_bytes(data[:ends[4] + 100])  # in the 6th
  (temp / 'features-bbbb').write_bytes(data[:ends[2]])
  with open(os.path.join(outputs.run, run['error_shards'][0]['path']),
            'rb') as f:
    errors = f.read().splitlines(keepends=True)
  (temp / 'errors-cccc').write_bytes(b''.join(errors[:4]) + errors[4][:30])
  (out / '.temp-featurize-ba98765432ff').mkdir()  # killed before writing
  report = inspect(str(out))
  assert report.rows['status'].startswith('UNFINISHED')
  assert report.number('features') == 8
  assert report.number('errors') == 4
  assert 'not JSON: 1 error line (cut short by a kill?)' in report.text
  assert 'left behind: 2 temporary folders' in report.text
  assert 'images in' not in report.rows
  result = featurize('inspect', str(out), '--plot', str(tmp_path / 'p.png'))
  assert result.returncode == 0, result.stderr
  assert 'PCA of 8 features: the first records of 2 files' in result.stdout


def test_a_dataset_without_a_published_version_is_unfinished(outputs,
                                                            tmp_path):
  """A first refresh killed before the pointer: a manifest, no LATEST."""
  root = tmp_path / 'new-dataset'
  (root / versions.VERSIONS).mkdir(parents=True)
  first = versions.list_versions(outputs.dataset)[0]
  shutil.copy(versions.manifest_path(outputs.dataset, first),
              root / versions.VERSIONS)
  report = inspect(str(root))
  assert report.rows['status'].startswith('UNFINISHED: a dataset with no '
                                          'published version yet')
  assert len(report.text.splitlines()) == 2  # heading and status only


def upload(gcs, folder: str, prefix: str) -> str:
  """Copies a local output, hidden files too, to the test bucket."""
  for parent, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(parent, name)
      gcs.bucket.blob(f'{prefix}/{os.path.relpath(path, folder)}'
                      ).upload_from_filename(path)
  return f'gs://{gcs.bucket.name}/{prefix}'


def test_outputs_on_gcs_report_as_they_do_on_local_disk(outputs, gcs,
                                                        tmp_path):
  for name in ('run', 'dataset'):
    local = getattr(outputs, name)
    remote = upload(gcs, local, f'inspect/{name}')
    here, there = inspect(local), inspect(remote, env=gcs.env)
    assert there.rows == here.rows
    assert there.groups == here.groups
    assert there.text.split('\n', 1)[1] == here.text.split('\n', 1)[1]
  result = featurize('inspect', remote, '--plot', str(tmp_path / 'gs.png'),
                     '--sample', '8', env=gcs.env)
  assert result.returncode == 0, result.stderr
  assert 'PCA of 8 features: the first records of 4 files' in result.stdout
  # A killed run's leftovers: counted as far as is cheap there.
  with open(os.path.join(outputs.run, 'manifest.json')) as f:
    error_shard = json.load(f)['error_shards'][0]['path']
  gcs.bucket.blob('inspect/killed/.temp-featurize-0a1b2c3d4e5f/errors-x'
                  ).upload_from_filename(os.path.join(outputs.run,
                                                      error_shard))
  killed = inspect(f'gs://{gcs.bucket.name}/inspect/killed', env=gcs.env)
  assert killed.rows['status'].startswith('UNFINISHED')
  assert killed.number('errors') == len(outputs.ds.errors)


# The plot.

def test_plot_is_a_png_of_the_pca_of_the_first_records(outputs, tmp_path):
  png = str(tmp_path / 'run.png')
  result = featurize('inspect', outputs.run, '--plot', png, '--sample',
                     '20')
  assert result.returncode == 0, result.stderr
  assert 'PCA of 20 features: the first records of 1 file' in result.stdout
  from PIL import Image
  with Image.open(png) as image:
    assert image.format == 'PNG'
    assert image.size == (1400, 650)
    image.load()
    assert len(image.getcolors(1 << 20)) > 100  # drawn, not blank

  # The points drawn are the PCA of the first 20 records, by a reference.
  script = '''
import json, sys
from pipeline import read_features
from pipeline.inspection import inspect_output
from pipeline.inspection import plot as inspect_plot
inspected = inspect_output.inspect(sys.argv[1])
sample = inspect_plot.sample_features(inspected.feature_files, 20)
projection = inspect_plot.draw(sys.argv[2], inspected.summary, sample)
records = list(read_features.iter_features(sys.argv[1]))
print(json.dumps({
    'keys': sample.keys, 'labels': sample.labels,
    'coords': projection.coords.tolist(),
    'explained': projection.explained.tolist(),
    'first': [[r.key, r.label, r.features.tolist()] for r in records[:20]],
    'tensorflow': 'tensorflow' in sys.modules}))
'''
  drawn = json.loads(subprocess.run(
      [sys.executable, '-c', script, outputs.run, str(tmp_path / 'x.png')],
      cwd=ROOT, check=True, capture_output=True, text=True).stdout)
  assert not drawn['tensorflow']
  assert drawn['keys'] == [k for k, _, _ in drawn['first']]
  assert drawn['labels'] == [label for _, label, _ in drawn['first']]
  features = np.array([f for _, _, f in drawn['first']])
  centred = features - features.mean(axis=0)
  values, vectors = np.linalg.eigh(centred.T @ centred)
  reference = centred @ vectors[:, ::-1][:, :2]
  coords = np.array(drawn['coords'])
  for i in range(2):
    sign = np.sign(coords[:, i] @ reference[:, i])
    np.testing.assert_allclose(coords[:, i], sign * reference[:, i],
                               rtol=1e-6, atol=1e-6 * np.abs(
                                   reference).max())
  np.testing.assert_allclose(drawn['explained'],
                             values[::-1][:2] / values.sum(), rtol=1e-6)


def test_plot_of_a_dataset_samples_every_file(outputs, tmp_path):
  png = str(tmp_path / 'dataset.png')
  result = featurize('inspect', outputs.dataset, '--plot', png, '--sample',
                     '8')
  assert result.returncode == 0, result.stderr
  assert 'PCA of 8 features: the first records of 4 files' in result.stdout
  from PIL import Image
  with Image.open(png) as image:
    assert image.size == (1400, 650)


def test_plot_without_matplotlib_says_what_to_install(outputs, tmp_path):
  script = ('import sys; sys.modules["matplotlib"] = None\n'
            'from pipeline import cli\n'
            'sys.exit(cli.main(["inspect", sys.argv[1], "--plot", '
            'sys.argv[2]]))')
  png = tmp_path / 'none.png'
  result = subprocess.run([sys.executable, '-c', script, outputs.run,
                           str(png)], cwd=ROOT, capture_output=True,
                          text=True)
  assert result.returncode == 2  # usage
  assert result.stderr == ('featurize: error: --plot needs matplotlib: pip '
                           'install \'featurize[plot]\'\n')
  assert not png.exists()


# Pure parts, on data where the answer is known.

def error_line(key, stage, error_type) -> bytes:
  return json.dumps({'key': key, 'source': 's', 'stage': stage,
                     'error_type': error_type, 'message': 'm'}).encode()


def test_tally_counts_every_line_and_keeps_three_examples_per_group():
  tally = ErrorTally()
  for i in range(10000):
    tally.add(error_line(f'a{i}', 'decode', 'corrupt_image') + b'\n')
  for i in range(3):
    tally.add(error_line(f'b{i}', 'read', 'truncated_tar'))
  tally.add(error_line('c0', 'decode', 'empty'))
  tally.add(error_line('c1', 'read', 'corrupt_record'))
  tally.add(b'\n')
  tally.add(b'{"key": "cut sh')
  tally.add(b'[1, 2]')
  assert tally.groups() == (
      ('decode', 'corrupt_image', 10000, ('a0', 'a1', 'a2')),
      ('read', 'truncated_tar', 3, ('b0', 'b1', 'b2')),
      ('decode', 'empty', 1, ('c0',)),
      ('read', 'corrupt_record', 1, ('c1',)))
  assert (tally.lines, tally.unreadable) == (10005, 2)


def manifest(**changes) -> dict:
  base = {'model': 'VGG16', 'layer': 'fc2', 'pooling': 'none',
          'precision': 'bfloat16', 'feature_shape': [4096],
          'weights': {'source': 'gs://b/w.h5', 'file': 'w.h5',
                      'sha256': 'ab' * 32},
          'preprocessing': {'image_size': 224, 'resize': 'squash'},
          'status': 'succeeded',
          'counts': {'images_in': 10, 'features': 8, 'errors': 2},
          'input_shards': [{'path': 'a', 'images': 10}],
          'feature_shards': [{'path': 'features-0', 'records': 8}],
          'error_shards': [{'path': 'errors-0', 'records': 2}]}
  base.update(changes)
  return base


def two_errors() -> ErrorTally:
  tally = ErrorTally()
  tally.add(error_line('x', 'decode', 'empty'))
  tally.add(error_line('y', 'decode', 'empty'))
  return tally


def test_summarise_run_status_from_manifest_and_success_file():
  ok = inspect_summary.summarise_run('out', manifest(), True, two_errors())
  assert (ok.status, ok.error_share, ok.notes) == ('succeeded', 0.2, ())
  assert ok.model.weights == 'gs://b/w.h5, sha256 abababababab'
  assert ok.model.resize == 'squash'
  assert ok.error_groups == (('decode', 'empty', 2, ('x', 'y')),)
  failed = inspect_summary.summarise_run(
      'out', manifest(status='too_many_errors'), False, two_errors())
  assert failed.status == 'failed'
  assert failed.status_detail.startswith(
      'FAILED: too many errors (2 of 10 images, 20.0%)')
  cut = inspect_summary.summarise_run('out', manifest(), False, two_errors())
  assert cut.status == 'unfinished'
  lost = inspect_summary.summarise_run('out', manifest(), True, ErrorTally())
  assert lost.notes == ('the manifest counts 2 errors but its error files '
                        'hold 0 lines',)


def test_format_report_lists_groups_and_files():
  text = inspect_summary.format_report(inspect_summary.summarise_run(
      'out', manifest(), True, two_errors()))
  report = Report(text)
  assert report.rows['errors'] == '2 (20.0% of images in)'
  assert report.rows['model'] == 'VGG16 fc2, none pooling, bfloat16'
  assert report.groups == [(2, 'decode', 'empty', ['x', 'y'])]
  assert 'feature files: 1 (8 records)' in text
  assert 'error files: 1 (2 lines)' in text


def test_plan_sample_spreads_the_budget_over_the_files():
  assert inspect_plot.plan_sample([100, 2, 100], 10) == [4, 2, 4]
  assert inspect_plot.plan_sample([100, 0, 100], 7) == [4, 0, 3]
  assert inspect_plot.plan_sample([3, 2], 100) == [3, 2]
  assert inspect_plot.plan_sample([5] * 10, 4) == [1, 0, 1, 0, 0, 1, 0, 1,
                                                   0, 0]
  assert inspect_plot.plan_sample([], 5) == []
  many = inspect_plot.plan_sample(list(range(1, 200)), 2000)
  assert sum(many) == 2000 and all(t <= r for t, r in zip(many, range(1,
                                                                        200)))


def test_sample_features_reads_no_more_than_it_keeps():
  read = collections.Counter()

  def read_file(path):
    for i in range(100):
      read[path] += 1
      yield Features(f'{path}/{i}', np.full((2, 3), i, np.float32),
                     i % 3 if path == 'a' else None)

  sample = inspect_plot.sample_features(
      [FileCount('a', 100), FileCount('b', 100)], 6, read_file)
  assert read == {'a': 3, 'b': 3}
  assert sample.keys == ['a/0', 'a/1', 'a/2', 'b/0', 'b/1', 'b/2']
  assert sample.labels == [0, 1, 2, None, None, None]
  assert sample.features.shape == (6, 6)
  np.testing.assert_array_equal(sample.features[4], np.ones(6))
  assert sample.files_read == 2


def test_pca_of_points_on_a_line_is_their_position_along_it():
  rng = np.random.default_rng(0)
  direction = rng.normal(size=50)
  direction /= np.linalg.norm(direction)
  t = rng.normal(size=40) * 5
  points = 3.0 + t[:, None] * direction
  projection = inspect_plot.pca_2d(points)
  along = t - t.mean()
  sign = np.sign(projection.coords[:, 0] @ along)
  np.testing.assert_allclose(projection.coords[:, 0], sign * along,
                             atol=1e-9)
  np.testing.assert_allclose(projection.coords[:, 1], 0, atol=1e-9)
  np.testing.assert_allclose(projection.explained, [1, 0], atol=1e-12)


def test_pca_of_a_known_plane():
  # x along (1, 0, 0) with variance 9 > y along (0, 1, 0) with variance 1:
  # the coordinates are x and y (signs: the largest loading positive).
  rng = np.random.default_rng(1)
  x = rng.normal(size=200) * 3
  x -= x.mean()
  y = rng.normal(size=200)
  y -= y.mean()
  y -= x * (x @ y) / (x @ x)  # exactly uncorrelated: the axes are exact
  points = np.stack([x, y, np.zeros(200)], axis=1) + [1, 2, 3]
  projection = inspect_plot.pca_2d(points)
  np.testing.assert_allclose(projection.coords, np.stack([x, y], axis=1),
                             atol=1e-9)
  np.testing.assert_allclose(projection.explained.sum(), 1)
  assert inspect_plot.pca_2d(points[:1]).coords.tolist() == [[0, 0]]


def test_labels_map_to_colours():
  plan = inspect_plot.colour_plan([3, None, 1, 3, 10])
  assert plan.classes == [1, 3, 10]
  assert plan.index.tolist() == [1, -1, 0, 1, 2]
  assert (plan.colormap, plan.legend) == ('tab10', True)
  colours = inspect_plot.class_colours(plan)
  assert len({tuple(c) for c in colours}) == 3  # one colour each
  import matplotlib
  np.testing.assert_allclose(colours[2], matplotlib.colormaps['tab10'](2))
  many = inspect_plot.colour_plan(list(range(25)) * 2)
  assert (many.colormap, many.legend, len(many.classes)) == ('turbo', False,
                                                             25)
  assert len({tuple(c) for c in inspect_plot.class_colours(many)}) == 25
  assert inspect_plot.colour_plan([None, None]).classes == []
  assert inspect_plot.colour_plan([b'cat', b'ant']).classes == [b'ant',
                                                                b'cat']
  assert inspect_plot.colour_plan(list(range(15))).colormap == 'tab20'


def test_count_complete_records_of_a_file_cut_anywhere(tmp_path):
  records = [tfrecord_framing.encode_record(bytes([i]) * (10 + i))
             for i in range(3)]
  data = b''.join(records)
  path = tmp_path / 'f'
  for cut, whole in ((len(data), 3), (len(data) - 1, 2),
                     (len(records[0]) + 5, 1), (len(records[0]), 1),
                     (3, 0), (0, 0)):
    path.write_bytes(data[:cut])
    assert count_complete_records(str(path)) == whole, cut
