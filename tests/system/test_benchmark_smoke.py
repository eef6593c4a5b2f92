"""A few-image run of every benchmark contender and of the report, so the
benchmark cannot rot. Its numbers mean nothing; the full benchmark is
``python -m benchmarks.run``."""
import json
import os

import pytest

from benchmarks import dataset, report
from benchmarks import run as bench_run

CONTENDERS = ('bare', 'naive', 'naive_all_layers', 'stock', 'featurize')


@pytest.fixture(scope='module')
def rows(tmp_path_factory):
  root = tmp_path_factory.mktemp('bench')
  images = str(root / 'imagenet')
  dataset.write_image_folder(images, 3)
  bench = bench_run.Bench(str(root), str(root / 'results'),
                          {'imagenet': images})
  return {name: bench.run(name, count=2, batch_size=2) for name in CONTENDERS}


@pytest.mark.parametrize('name', CONTENDERS)
def test_contender_runs_and_is_measured(rows, name):
  row = rows[name]
  assert row['contender'] == name and row['count'] == 2
  # TensorFlow alone takes hundreds of MB: a real process was measured.
  assert 300 < row['peak_rss_mb'] < 20000
  assert 0 < row['t_done'] <= row['wall_s']


def test_ceiling_times_its_own_loop(rows):
  assert rows['bare']['loop_images_per_s'] > 0
  assert rows['bare']['t_model_ready'] < rows['bare']['t_first_record']


def test_featurize_contender_ran_the_real_job(rows):
  row = rows['featurize']
  with open(os.path.join(row['features_dir'], 'manifest.json')) as f:
    manifest = json.load(f)
  assert manifest['counts'] == {'images_in': 2, 'features': 2, 'errors': 0}
  assert 0 < row['first_output_s'] < row['wall_s']


def _summary(growth_mb=10.0, cosine_min=0.9995):
  speeds = {'bare float32': 10.0, 'bare bfloat16': 20.0,
            'featurize float32': 9.5, 'featurize bfloat16': 17.0}
  return {
      'machine': {'cpu': 'test', 'cores': 2, 'memory_gb': 24, 'flags': []},
      'settings': {}, 'dataset': {
          'imagenet': {'images': 2, 'resolution': [500, 375], 'mean_kb': 1}},
      'throughput': {label: {'contender': label.split()[0],
                             'precision': label.split()[1], 'workers': 1,
                             'images_per_s': v, 'runs': [v],
                             'time_to_first_record_s': 4.0}
                     for label, v in speeds.items()},
      'memory': {'by_count': {'featurize': {200: 800.0, 2000: 800 + growth_mb},
                              'naive': {200: 900.0, 2000: 2100.0}},
                 'by_resolution': {'featurize': {'imagenet': 800.0,
                                                 '12mp': 810.0,
                                                 '24mp': 820.0}},
                 'runs': {'by_count': {'featurize': {
                     200: [790.0, 800.0, 805.0]}}}},
      'bfloat16_vs_float32_cosine': {'images': 3, 'min': cosine_min,
                                     'p05': 0.9996, 'median': 0.9999,
                                     'max': 1.0},
  }


def test_targets_pass_and_fail_on_the_numbers():
  results = {t['target']: t['pass'] for t in report.targets(_summary())}
  assert results['throughput float32 >= 0.9 x bare-model ceiling']
  assert not results['throughput bfloat16 >= 0.9 x bare-model ceiling']
  assert results['peak RSS growth 200 -> 2000 images <= 5 %']
  worse = {t['target']: t['pass'] for t in report.targets(
      _summary(growth_mb=60, cosine_min=0.99))}
  assert not worse['peak RSS growth 200 -> 2000 images <= 5 %']
  assert not worse['bfloat16 vs float32 cosine similarity >= 0.999 per image']


def test_table_and_plots_are_written(tmp_path):
  summary = _summary()
  summary['targets'] = report.targets(summary)
  text = report.markdown(summary)
  assert '| featurize float32 | 9.50 | 0.95 | 4.0 |' in text  # no method
  assert 'FAIL: throughput bfloat16' in text
  assert '| featurize | 800 (790-805) | 810 |' in text  # median (range)
  report.plots(summary, str(tmp_path))
  for name in ('throughput.png', 'rss_vs_images.png',
               'rss_vs_resolution.png'):
    assert (tmp_path / name).stat().st_size > 5000


def test_measure_sees_children_that_threads_started(tmp_path):
  import sys
  from benchmarks import measure
  child = 'import time; b = b"x" * (300 * 2**20); time.sleep(0.5)'
  script = ('import json, subprocess, sys, threading\n'
            'def start():\n'
            f'  subprocess.run([sys.executable, "-c", {child!r}])\n'
            'thread = threading.Thread(target=start)\n'
            'thread.start(); thread.join()\n'
            'print(json.dumps({"ok": 1}))\n')
  result = measure.run_measured([sys.executable, '-c', script],
                                cwd=str(tmp_path))
  assert result.report == {'ok': 1}
  assert len(result.peak_rss_by_process_mb) == 2
  assert result.peak_rss_by_process_mb[0] < 100  # the parent stays small
  assert result.peak_rss_mb >= 300  # the child, seen through its thread
