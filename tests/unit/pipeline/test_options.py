"""Command-line parsing: job flags to the config, the rest to Beam."""
import pytest

from pipeline import demo, options


def _write(tmp_path, text):
  path = tmp_path / 'runner.yaml'
  path.write_text(text)
  return str(path)


def test_every_job_flag_reaches_the_config():
  job, beam_args, _ = options.parse_run_args([
      '--input', 'gs://b/*.tar', '--output', 'gs://b/out', '--format',
      'webdataset', '--weights', 'random', '--layer', 'block4_pool',
      '--pooling', 'max', '--precision', 'bfloat16', '--batch-size', '8',
      '--max-batch-bytes', '1000000000', '--large-model', '--resize', 'squash',
      '--image-size', '160', '--max-pixels', '5000', '--max-image-bytes',
      '1234', '--image-feature', 'jpeg', '--key-feature', 'id',
      '--label-feature', 'y', '--max-error-fraction', '0.25'])
  assert job.read.pattern == 'gs://b/*.tar'
  assert job.read.format == 'webdataset'
  assert (job.read.image_feature, job.read.key_feature,
          job.read.label_feature) == ('jpeg', 'id', 'y')
  assert job.read.max_image_bytes == 1234
  assert job.decode.resize == 'squash' and job.decode.image_size == 160
  assert job.decode.max_pixels == 5000
  model = job.model
  assert (model.weights, model.layer, model.pooling, model.precision) == (
      'random', 'block4_pool', 'max', 'bfloat16')
  assert (model.batch_size, model.max_batch_bytes, model.large_model,
          model.image_size) == (8, 1000000000, True, 160)
  assert job.output.directory == 'gs://b/out'
  assert job.output.max_error_fraction == 0.25
  assert beam_args == ['--runner=FnApiRunner']


def test_unknown_flags_go_to_beam_after_the_run_config(tmp_path):
  config = _write(tmp_path, 'runner: FnApiRunner\ndirect_num_workers: 2\n'
                  'save_main_session: true\nexperiments: [a, b]\n'
                  'streaming: false\n')
  _, beam_args, _ = options.parse_run_args([
      '--input', 'x', '--output', 'y', '--config', config,
      '--direct_num_workers=1', '--temp_location', '/tmp/t'])
  assert beam_args == ['--runner=FnApiRunner', '--direct_num_workers=2',
                       '--save_main_session', '--experiments=a',
                       '--experiments=b', '--direct_num_workers=1',
                       '--temp_location', '/tmp/t']
  from apache_beam.options.pipeline_options import PipelineOptions
  parsed = PipelineOptions(beam_args).get_all_options()
  assert parsed['direct_num_workers'] == 1  # the command line wins
  assert parsed['experiments'] == ['a', 'b']


def test_runner_on_the_command_line_is_kept():
  _, beam_args, _ = options.parse_run_args(
      ['--input', 'x', '--output', 'y', '--runner', 'DataflowRunner'])
  assert beam_args == ['--runner', 'DataflowRunner']


def test_run_config_may_not_hold_job_settings(tmp_path):
  config = _write(tmp_path, 'runner: FnApiRunner\nbatch_size: 4\n')
  with pytest.raises(ValueError, match='job setting'):
    options.parse_run_args(['--input', 'x', '--output', 'y', '--config',
                            config])


def test_run_config_job_defaults_yield_to_the_command_line(tmp_path):
  config = _write(tmp_path, 'runner: FnApiRunner\nfeaturize:\n'
                  '  large_model: true\n  precision: bfloat16\n'
                  '  batch_size: 8\n')
  job, beam_args, wait = options.parse_run_args(
      ['--input', 'x', '--output', 'y', '--config', config])
  assert (job.model.large_model, job.model.precision,
          job.model.batch_size) == (True, 'bfloat16', 8)
  assert beam_args == ['--runner=FnApiRunner'] and wait
  job, _, _ = options.parse_run_args(
      ['--input', 'x', '--output', 'y', '--config', config, '--batch-size',
       '4', '--no-large-model'])
  assert (job.model.large_model, job.model.batch_size) == (False, 4)


@pytest.mark.parametrize('section, match', [
    # one run's, not a runner's:
    ('  output: gs://b/elsewhere\n', 'not a job flag'),
    ('  batch_sise: 4\n', 'not a job flag'),
    ('  - 4\n', 'must be a mapping'),
])
def test_run_config_job_section_is_checked(tmp_path, section, match):
  config = _write(tmp_path, 'runner: FnApiRunner\nfeaturize:\n' + section)
  with pytest.raises(ValueError, match=match):
    options.parse_run_args(['--input', 'x', '--output', 'y', '--config',
                            config])


def test_run_config_job_values_meet_the_flag_checks(tmp_path):
  config = _write(tmp_path, 'featurize:\n  precision: bf16\n')
  with pytest.raises(SystemExit):  # argparse: invalid choice
    options.parse_run_args(['--input', 'x', '--output', 'y', '--config',
                            config])


def test_flags_answer_to_underscore_spelling_and_wait_can_be_off():
  job, beam_args, wait = options.parse_run_args(
      ['--input=gs://b/x', '--output=gs://b/y', '--batch_size=4',
       '--large_model', '--max_error_fraction=0.5', '--no-wait',
       '--num_workers=3'])
  assert (job.model.batch_size, job.model.large_model,
          job.output.max_error_fraction) == (4, True, 0.5)
  assert not wait
  assert beam_args == ['--runner=FnApiRunner', '--num_workers=3']


def test_invalid_combinations_are_refused_at_parse_time():
  with pytest.raises(ValueError):
    options.parse_run_args(['--input', 'x', '--output', 'y', '--layer', 'fc1',
                            '--pooling', 'avg'])
  with pytest.raises(ValueError):
    options.parse_run_args(['--input', 'x', '--output', 'y',
                            '--max-error-fraction', '2'])


def test_shipped_local_config_avoids_prism():
  _, beam_args, _ = options.parse_run_args(
      ['--input', 'x', '--output', 'y', '--config', demo.LOCAL_CONFIG])
  assert beam_args[0] == '--runner=FnApiRunner'
  assert not any(a.startswith('--runner') for a in beam_args[1:])
