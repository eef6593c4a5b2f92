"""``--memory-budget``: the planner's arithmetic, what it refuses, and a
planned run that prints, records and shows its plan."""
import io
import json
import os

import pytest

from pipeline import cli, demo, memory_plan, options
from pipeline.memory_plan import (DECODE_BYTES_PER_PIXEL, GIB, MARGIN, MIB,
                                  RUNTIME_BYTES, BudgetError)
from tests import datasets
from transforms import imaging, vgg16

MODEL = vgg16.ModelConfig()
DECODE = imaging.DecodeConfig()


@pytest.mark.parametrize('text, value', [
    ('6GiB', 6 * GIB), ('1.5G', int(1.5 * GIB)), ('700MiB', 700 * MIB),
    ('512M', 512 * MIB), ('2048', 2048), ('3 gib', 3 * GIB)])
def test_sizes_parse_in_binary_units(text, value):
  assert memory_plan.parse_size(text) == value


@pytest.mark.parametrize('text', ['', 'lots', '6XB', '-1G'])
def test_what_is_not_a_size_is_refused(text):
  with pytest.raises(ValueError, match='not a size'):
    memory_plan.parse_size(text)


def _reader(files):
  def read(path):
    if path not in files:
      raise OSError(path)
    return io.StringIO(files[path])
  return read


def test_auto_reads_the_cgroup_limit_else_the_machines_memory():
  meminfo = 'MemTotal:       24000000 kB\nMemFree: 1 kB\n'
  assert memory_plan.machine_memory(_reader({
      '/sys/fs/cgroup/memory.max': '4294967296\n',
      '/proc/meminfo': meminfo})) == 4 * GIB
  for unlimited in ({'/sys/fs/cgroup/memory.max': 'max\n'},
                    {'/sys/fs/cgroup/memory/memory.limit_in_bytes':
                     str(1 << 62)}, {}):
    assert memory_plan.machine_memory(_reader(
        dict(unlimited, **{'/proc/meminfo': meminfo}))) == 24000000 * 1024
  budget, source = memory_plan.budget_of(
      'auto', 4, memory=lambda: 16 * GIB)
  assert budget == 4 * GIB and '4 worker process' in source


@pytest.mark.parametrize('flags, workers', [
    ([], (1, 1)),
    (['--direct_num_workers=3', '--direct_running_mode=multi_processing'],
     (3, 1)),
    (['--direct_num_workers', '4', '--direct_running_mode',
      'multi_threading'], (1, 4)),
    (['--direct_num_workers=2'], (1, 1))])
def test_local_workers_follow_the_direct_runners_flags(flags, workers):
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
  assert options.local_workers(PipelineOptions(flags)) == workers


def test_a_roomy_budget_keeps_the_defaults():
  plan = memory_plan.plan(6 * GIB, 'given', MODEL, DECODE)
  assert (plan.batch_size, plan.max_pixels) == (16, 100_000_000)
  assert plan.predicted_peak <= 6 * GIB * (1 - MARGIN)
  assert plan.weights == 4 * memory_plan.NOTOP_PARAMETERS
  # block 1's two tensors, float32, and TensorFlow's overhead: 33 MB.
  assert plan.per_image == int(2 * 224 * 224 * 64 * 4 * 1.3)


def test_a_tighter_budget_lowers_the_batch_and_max_pixels():
  """A thread holds its batch or its decode, never both (the fused stage
  runs one element at a time): each may take the thread's whole room."""
  budget = int(1.5 * GIB)
  small = memory_plan.plan(budget, 'given', MODEL, DECODE)
  room = int(budget * (1 - MARGIN)) - RUNTIME_BYTES - small.weights
  assert small.batch_size == room // small.per_image < 16
  assert small.max_pixels == room // DECODE_BYTES_PER_PIXEL < 100_000_000
  assert small.predicted_peak == RUNTIME_BYTES + small.weights + max(
      small.batch_size * small.per_image, small.decode)
  assert small.predicted_peak <= budget * (1 - MARGIN)
  three = memory_plan.plan(3 * GIB, 'given', MODEL, DECODE)
  assert (three.batch_size, three.max_pixels) == (16, 100_000_000)


def test_bfloat16_several_layers_and_threads_change_the_plan():
  bf16 = memory_plan.per_image_bytes(
      vgg16.ModelConfig(precision='bfloat16'))
  assert abs(bf16 * 2 - memory_plan.per_image_bytes(MODEL)) <= 1
  layers = vgg16.ModelConfig(layer='block1_pool,block5_pool')
  assert memory_plan.per_image_bytes(layers) == int(
      (2 * 224 * 224 * 64 + 112 * 112 * 64) * 4 * 1.3)
  one = memory_plan.plan(3 * GIB, 'given', MODEL, DECODE, threads=1)
  two = memory_plan.plan(3 * GIB, 'given', MODEL, DECODE, threads=2)
  assert two.decode == 2 * two.max_pixels * DECODE_BYTES_PER_PIXEL
  assert two.max_pixels < one.max_pixels == 100_000_000
  assert two.predicted_peak <= 3 * GIB * (1 - MARGIN)


def test_too_small_a_budget_is_refused_with_the_smallest_that_works():
  with pytest.raises(BudgetError, match=r'need 1\.19 GiB at least'):
    memory_plan.plan(700 * MIB, 'given', MODEL, DECODE)
  top = vgg16.ModelConfig(layer='fc2')
  with pytest.raises(BudgetError, match=r'weights \(0\.52 GiB\)'):
    memory_plan.plan(int(1.5 * GIB), 'given', top, DECODE)


def test_given_flags_are_kept_or_refused_with_what_would_fit():
  kept = memory_plan.plan(3 * GIB, 'given',
                          vgg16.ModelConfig(batch_size=4), DECODE,
                          batch_given=True)
  assert kept.batch_size == 4
  with pytest.raises(BudgetError, match=r'--batch-size 64: --batch-size '
                     r'1[0-9] would fit'):
    memory_plan.plan(int(1.5 * GIB), 'given',
                     vgg16.ModelConfig(batch_size=64), DECODE,
                     batch_given=True)
  with pytest.raises(BudgetError, match=r'--max-pixels 100,000,000: '
                     r'--max-pixels [0-9,]+ would fit'):
    memory_plan.plan(int(1.5 * GIB), 'given', MODEL, DECODE,
                     pixels_given=True)
  with pytest.raises(BudgetError, match='--device cpu'):
    memory_plan.plan(6 * GIB, 'given', vgg16.ModelConfig(device='gpu'),
                     DECODE)


def _parse(*flags):
  return options.parse_run_args(['--input', 'in/*', '--output', 'out',
                                 *flags])


def test_the_flag_plans_the_job_it_parses():
  parsed = _parse('--memory-budget', '1.2GiB')
  plan = parsed.job.memory_plan
  assert parsed.job.model.batch_size == plan.batch_size < 16
  assert parsed.job.decode.max_pixels == plan.max_pixels
  assert _parse().job.memory_plan is None
  assert _parse().job.decode.max_pixels == 100_000_000
  with pytest.raises(ValueError, match='local runs'):
    _parse('--memory-budget', '4GiB', '--runner=DataflowRunner')


def test_a_planned_run_prints_records_and_shows_its_plan(tmp_path, capsys,
                                                         notop_weights):
  datasets.write_dataset(str(tmp_path / 'in'), formats=('files',), bad=False)
  out = str(tmp_path / 'out')
  assert cli.main(['run', '--config', demo.LOCAL_CONFIG, '--input',
                   str(tmp_path / 'in' / '**'), '--output', out,
                   '--weights', notop_weights, '--memory-budget', '1.5GiB',
                   '--quiet']) == 0
  printed = capsys.readouterr().out
  first = [l for l in printed.splitlines() if 'memory plan' in l]
  assert first and first[0].startswith(
      'featurize: memory plan: 1.50 GiB per worker (given)')
  with open(os.path.join(out, 'manifest.json')) as f:
    recorded = json.load(f)['memory_plan']
  assert recorded['budget'] == int(1.5 * GIB)
  assert recorded['batch_size'] < 16 and recorded['predicted_peak'] > 0
  assert cli.main(['inspect', out]) == 0
  shown = capsys.readouterr().out
  assert 'memory plan: 1.50 GiB per worker' in shown
