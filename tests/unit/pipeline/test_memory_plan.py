"""``--memory-budget``: the planner's arithmetic, what it refuses, and a
planned run that prints, records and shows its plan."""
import io
import json
import os
import re

import pytest

from pipeline import cli, demo, memory_plan, options, topology
from pipeline.memory_plan import (DECODE_BYTES_PER_PIXEL, GIB, MARGIN, MIB,
                                  RUNTIME_BYTES, BudgetError)
from tests.support import datasets
from tests.support.paths import ROOT
from transforms.decode import imaging
from transforms.extract import models


MODEL = models.ModelConfig()
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
      'auto', memory_plan.Workers('this machine', 4, 1, 16 * GIB))
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
  assert topology.local_workers(PipelineOptions(flags)) == workers


def test_a_roomy_budget_keeps_the_defaults():
  plan = memory_plan.plan(6 * GIB, 'given', MODEL, DECODE)
  assert (plan.batch_size, plan.max_pixels) == (16, 100_000_000)
  assert plan.predicted_peak <= 6 * GIB * (1 - MARGIN)
  assert plan.weights == 4 * 14_714_688  # VGG16's convolutional part
  # block 1's two tensors, float32, and TensorFlow's overhead: 33 MB.
  assert plan.per_image == int(2 * 224 * 224 * 64 * 4 * 1.3)


def test_a_tighter_budget_lowers_the_batch_and_max_pixels():
  """A thread holds its batch or its large decode, never both (the fused
  stage runs one element at a time): each may take the thread's whole
  room, less what it decodes ahead beside its batch."""
  budget = int(1.5 * GIB)
  small = memory_plan.plan(budget, 'given', MODEL, DECODE)
  # Decoding ahead: one decode of at most 32 MiB and, at the planned
  # batch, that many 224 px images.
  assert small.ahead == 32 * MIB + small.batch_size * 224 * 224 * 3
  ahead_16 = 32 * MIB + 16 * 224 * 224 * 3  # room is set aside for 16
  room = int(budget * (1 - MARGIN)) - RUNTIME_BYTES - small.weights
  assert small.batch_size == (room - ahead_16) // small.per_image < 16
  assert small.max_pixels == room // DECODE_BYTES_PER_PIXEL < 100_000_000
  assert small.predicted_peak == RUNTIME_BYTES + small.weights + max(
      small.batch_size * small.per_image + small.ahead, small.decode)
  assert small.predicted_peak <= budget * (1 - MARGIN)
  three = memory_plan.plan(3 * GIB, 'given', MODEL, DECODE)
  assert (three.batch_size, three.max_pixels) == (16, 100_000_000)


def test_bfloat16_several_layers_and_threads_change_the_plan():
  bf16 = memory_plan.per_image_bytes(
      models.ModelConfig(precision='bfloat16'))
  assert abs(bf16 * 2 - memory_plan.per_image_bytes(MODEL)) <= 1
  layers = models.ModelConfig(layer='block1_pool,block5_pool')
  assert memory_plan.per_image_bytes(layers) == int(
      (2 * 224 * 224 * 64 + 112 * 112 * 64) * 4 * 1.3)
  one = memory_plan.plan(3 * GIB, 'given', MODEL, DECODE, threads=1)
  two = memory_plan.plan(3 * GIB, 'given', MODEL, DECODE, threads=2)
  assert two.decode == 2 * two.max_pixels * DECODE_BYTES_PER_PIXEL
  assert two.max_pixels < one.max_pixels == 100_000_000
  assert two.ahead == one.ahead > 0  # each thread decodes ahead
  assert two.predicted_peak <= 3 * GIB * (1 - MARGIN)


def test_too_small_a_budget_is_refused_with_the_smallest_that_works():
  with pytest.raises(BudgetError, match=r'with decoding ahead \(0\.03 GiB\), '
                     r'or of a 12-megapixel decode, need 1\.26 GiB at least'):
    memory_plan.plan(700 * MIB, 'given', MODEL, DECODE)
  top = models.ModelConfig(layer='fc2')
  with pytest.raises(BudgetError, match=r'weights \(0\.52 GiB\)'):
    memory_plan.plan(int(1.5 * GIB), 'given', top, DECODE)


@pytest.mark.parametrize('model, budget, weights', [
    ('convnextxlarge', 2 * GIB, '1.30'),  # 350 M parameters
    ('efficientnetb7', 1 * GIB, '0.24'),  # at its own 600 px
])
def test_a_big_model_is_refused_with_the_smallest_budget_that_plans(
    model, budget, weights):
  config = models.ModelConfig(model=model)
  with pytest.raises(BudgetError) as refused:
    memory_plan.plan(budget, 'given', config, DECODE)
  assert f'the weights ({weights} GiB)' in str(refused.value)
  smallest = re.search(r'need ([0-9.]+) GiB at least', str(refused.value))
  assert smallest, refused.value
  fits = memory_plan.plan(int(float(smallest.group(1)) * GIB), 'given',
                          config, DECODE)
  assert fits.batch_size >= 1
  assert fits.weights == memory_plan.weights_bytes(config)


def test_given_flags_are_kept_or_refused_with_what_would_fit():
  kept = memory_plan.plan(3 * GIB, 'given',
                          models.ModelConfig(batch_size=4), DECODE,
                          batch_given=True)
  assert kept.batch_size == 4
  with pytest.raises(BudgetError, match=r'--batch-size 64: --batch-size '
                     r'1[0-9] would fit'):
    memory_plan.plan(int(1.5 * GIB), 'given',
                     models.ModelConfig(batch_size=64), DECODE,
                     batch_given=True)
  with pytest.raises(BudgetError, match=r'--max-pixels 100,000,000: '
                     r'--max-pixels [0-9,]+ would fit'):
    memory_plan.plan(int(1.5 * GIB), 'given', MODEL, DECODE,
                     pixels_given=True)
  with pytest.raises(BudgetError, match='--device cpu'):
    memory_plan.plan(6 * GIB, 'given', models.ModelConfig(device='gpu'),
                     DECODE)


def _parse(*flags):
  return options.parse_run_args(['--input', 'in/*', '--output', 'out',
                                 *flags])


def test_the_flag_plans_the_job_it_parses():
  parsed = _parse('--memory-budget', '1.3GiB')
  plan = parsed.job.memory_plan
  assert parsed.job.model.batch_size == plan.batch_size < 16
  assert parsed.job.decode.max_pixels == plan.max_pixels
  assert _parse().job.memory_plan is None
  assert _parse().job.decode.max_pixels == 100_000_000
  with pytest.raises(ValueError, match='machine_type'):
    _parse('--memory-budget', '4GiB', '--runner=DataflowRunner')
  with pytest.raises(ValueError, match='not SparkRunner'):
    _parse('--memory-budget', '4GiB', '--runner=SparkRunner')


@pytest.mark.system  # a whole run on the DirectRunner
def test_a_planned_run_prints_records_and_shows_its_plan(tmp_path, capsys,
                                                         notop_weights):
  datasets.write_dataset(str(tmp_path / 'in'), formats=('files',), bad=False)
  out = str(tmp_path / 'out')
  assert cli.main(['run', '--config', demo.LOCAL_CONFIG, '--input',
                   str(tmp_path / 'in' / '**'), '--output', out,
                   '--weights', notop_weights, '--memory-budget', '1.5GiB',
                   '--quiet']) == 0
  printed = capsys.readouterr().out
  first = [line for line in printed.splitlines() if 'memory plan' in line]
  assert first and first[0].startswith(
      'featurize: memory plan: 1.50 GiB per worker (given, this machine)')
  with open(os.path.join(out, 'manifest.json')) as f:
    recorded = json.load(f)['memory_plan']
  assert recorded['budget'] == int(1.5 * GIB)
  assert recorded['batch_size'] < 16 and recorded['predicted_peak'] > 0
  assert cli.main(['inspect', out]) == 0
  shown = capsys.readouterr().out
  assert 'memory plan: 1.50 GiB per worker' in shown


@pytest.mark.parametrize('machine, vcpus, gib', [
    ('n1-standard-4', 4, 15), ('n2-highmem-8', 8, 64),
    ('c3-standard-8', 8, 32), ('c3-highcpu-4', 4, 8), ('e2-medium', 2, 4),
    ('custom-4-16384', 4, 16), ('n2-custom-6-24576-ext', 6, 24),
    ('zones/us-central1-a/machineTypes/n2d-standard-2', 2, 8)])
def test_machine_types_give_their_vcpus_and_memory(machine, vcpus, gib):
  assert memory_plan.machine_type_size(machine) == (vcpus, int(gib * GIB))


def test_an_unknown_machine_type_is_refused_for_auto():
  with pytest.raises(ValueError, match='give a size'):
    memory_plan.machine_type_size('x9-mega-7')


DATAFLOW = ['--runner=DataflowRunner', '--machine_type=n2-standard-4',
            '--number_of_worker_harness_threads=2']


def test_dataflow_auto_divides_the_vm_among_its_sdk_processes():
  """An SDK process per vCPU (4 on n2-standard-4), less Dataflow's 1 GiB;
  one process with no_use_multiple_sdk_containers."""
  plan = _parse('--memory-budget', 'auto', *DATAFLOW).job.memory_plan
  assert plan.threads == 2
  assert plan.budget == (16 * GIB - memory_plan.DATAFLOW_RESERVED_BYTES) // 4
  assert 'Dataflow n2-standard-4' in plan.source
  assert '4 worker process(es) of 2 thread(s)' in plan.source
  one = _parse('--memory-budget', 'auto', *DATAFLOW,
               '--experiments=no_use_multiple_sdk_containers').job.memory_plan
  assert one.budget == 15 * GIB
  with pytest.raises(ValueError, match='machine_type'):
    _parse('--memory-budget', 'auto', '--runner=DataflowRunner',
           '--number_of_worker_harness_threads=2')


def test_large_model_takes_its_process_off_the_machine_first():
  """--large-model: one model process per VM holds a runtime and the
  weights; the SDK processes share the rest and hold no weights."""
  plain = _parse('--memory-budget', 'auto', *DATAFLOW).job.memory_plan
  shared = _parse('--memory-budget', 'auto', '--large-model',
                  *DATAFLOW).job.memory_plan
  server = RUNTIME_BYTES + memory_plan.weights_bytes(MODEL)
  assert shared.budget == (16 * GIB - memory_plan.DATAFLOW_RESERVED_BYTES -
                           server) // 4
  assert shared.weights == 0 and plain.weights == server - RUNTIME_BYTES
  assert 'shared model' in shared.source


def test_the_dataflow_run_config_plans_its_workers():
  """run_configs/dataflow.yaml's budget: c3-standard-8, 8 SDK processes of
  2 threads, one model per VM; its batch of 16 fits and is kept."""
  parsed = options.parse_run_args([
      '--config', os.path.join(ROOT, 'run_configs', 'dataflow.yaml'),
      '--input', 'gs://b/in/*', '--output', 'gs://b/out'])
  plan = parsed.job.memory_plan
  assert plan is not None and plan.batch_size == 16 and plan.threads == 2
  assert 'Dataflow c3-standard-8' in plan.source
  assert plan.predicted_peak <= plan.budget * (1 - MARGIN)


def test_flink_reads_a_taskmanagers_slots_and_wants_a_size():
  flink = ['--runner=PortableRunner', '--job_endpoint=localhost:8099',
           '--sdk_worker_parallelism=1', '--flink_master=flink:8081']
  asked = []

  def slots(rest):
    asked.append(rest)
    return 2

  workers = topology.runner_workers(flink, taskmanager_slots=slots)
  assert asked == ['flink:8081']
  assert (workers.processes, workers.threads, workers.memory) == (1, 2, None)
  budget, source = memory_plan.budget_of('3GiB', workers)
  assert budget == 3 * GIB and 'Flink at flink:8081, 2 slot(s)' in source
  with pytest.raises(ValueError, match='worker pool'):
    memory_plan.budget_of('auto', workers)
  with pytest.raises(ValueError, match='flink_master'):
    topology.runner_workers(flink[:-1], taskmanager_slots=slots)
  with pytest.raises(ValueError, match='cannot read the TaskManagers'):
    topology.flink_taskmanager_slots('127.0.0.1:9', timeout_s=2)


def _local(processes, memory_gib, **open_counts):
  return memory_plan.Workers('this machine', processes, 1,
                             int(memory_gib * GIB),
                             processes_flag='direct_num_workers',
                             **open_counts)


def test_an_open_process_count_gets_the_most_that_hold_a_full_batch():
  """direct_num_workers 0 (one per core, 8 here) on 4 GiB: a worker with
  a batch of 16 needs about 1.6 GiB, so 2 processes, not 8 starved ones;
  the Beam flag that says so is added."""
  layout = memory_plan.plan_layout('auto', _local(8, 4, most_processes=8),
                                   MODEL, DECODE)
  assert layout.plan.processes == 2 and layout.plan.batch_size == 16
  assert layout.beam_flags == ('--direct_num_workers=2',)
  assert layout.plan.budget == 2 * GIB
  assert 'planned --direct_num_workers=2' in layout.plan.line()
  assert not layout.large_model
  # On 64 GiB every core's process fits.
  roomy = memory_plan.plan_layout('auto', _local(8, 64, most_processes=8),
                                  MODEL, DECODE)
  assert roomy.plan.processes == 8 and roomy.plan.batch_size == 16


def test_a_given_process_count_that_does_not_fit_says_which_would():
  with pytest.raises(BudgetError, match=r'2 worker processes would fit '
                     r'\(--direct_num_workers=2\)'):
    memory_plan.plan_layout('auto', _local(8, 4), MODEL, DECODE)


def test_the_top_shares_one_model_when_copies_do_not_fit():
  """fc2 keeps the top's 553 MB of weights: six copies of it and a
  runtime each do not fit 10 GiB, one shared copy does, so the planner
  plans --large-model, unless the run says --no-large-model."""
  top = models.ModelConfig(layer='fc2')
  layout = memory_plan.plan_layout('auto', _local(6, 10), top, DECODE,
                                   large_model_given=False)
  assert layout.large_model and layout.plan.weights == 0
  assert layout.plan.chosen == ('--large-model',)
  assert 'shared model' in layout.plan.source
  with pytest.raises(BudgetError, match='cannot hold a worker'):
    memory_plan.plan_layout('auto', _local(6, 10), top, DECODE,
                            large_model_given=True)
  # Without the top a shared copy saves 59 MB a process: not chosen.
  plain = memory_plan.plan_layout('auto', _local(6, 16), MODEL, DECODE,
                                  large_model_given=False)
  assert not plain.large_model and plain.plan.chosen == ()


def test_dataflow_without_harness_threads_gets_them_planned():
  parsed = _parse('--memory-budget', 'auto', '--runner=DataflowRunner',
                  '--machine_type=n2-standard-4')
  plan = parsed.job.memory_plan
  assert plan.threads == topology.DATAFLOW_MOST_THREADS == 2
  assert parsed.beam_args[-1] == '--number_of_worker_harness_threads=2'
  # A small machine gets one thread a process.
  small = _parse('--memory-budget', 'auto', '--runner=DataflowRunner',
                 '--machine_type=e2-medium').job.memory_plan
  assert small.threads == 1 and small.batch_size < 16


def test_a_local_run_with_one_process_per_core_is_planned_from_the_flags():
  parsed = _parse('--memory-budget', '64GiB', '--direct_num_workers=0',
                  '--direct_running_mode=multi_processing')
  cores = os.cpu_count() or 1
  assert parsed.job.memory_plan.processes == cores
  assert parsed.beam_args[-1] == f'--direct_num_workers={cores}'
  from apache_beam.options.pipeline_options import PipelineOptions
  assert topology.local_workers(PipelineOptions(parsed.beam_args)) == (
      cores, 1)
