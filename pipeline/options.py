"""Command-line parsing: job flags to ``JobConfig``, the rest to Beam.

``parse_run_args`` turns ``featurize run`` arguments into a ``JobConfig``
and a list of Beam flags: the runner flags of ``--config FILE.yaml`` first,
then every flag featurize does not know, in order (so the command line
wins over the file). A run config may also hold job-flag defaults for its
runner, under ``featurize:``.
"""
import argparse
import dataclasses
import os
from typing import List, NamedTuple, Optional, Sequence, Tuple

import yaml

from pipeline import memory_plan, topology
from pipeline.config import JobConfig
from transforms.coordination import output_lock as lock
from transforms.decode import imaging
from transforms.extract import backend, models
from transforms.extract.models import model_files
from transforms.extract.gpu import settings as gpu_settings
from transforms.read.image_shards import INPUT_FORMATS, ReadConfig
from transforms.write.output_files import OutputConfig

DEFAULT_RUNNER = 'FnApiRunner'


def add_job_arguments(parser: argparse.ArgumentParser,
                      require_io: bool = True,
                      output_flag: str = '--output') -> List[argparse.Action]:
  """Adds the job flags of ``featurize run`` to ``parser``; returns them.

  Each ``--hyphenated-flag`` also answers to ``--hyphenated_flag``: Beam's
  own options are spelled with underscores, and so are Flex Template
  parameters. ``featurize refresh`` names its output ``--dataset``.
  """
  added = []

  def add(name, *more, **kwargs):
    spelled = '--' + name[2:].replace('-', '_')
    names = (name, spelled) if spelled != name else (name,)
    added.append(parser.add_argument(*names, *more, **kwargs))

  add('--input', required=require_io, metavar='PATTERN',
      help='Shard or file pattern, local or gs://.')
  if output_flag == '--output':
    add('--output', required=require_io, metavar='DIR',
        help='Output folder, local or gs://.')
  else:
    add(output_flag, required=True, metavar='ROOT', dest='output',
        help='Root of the versioned feature dataset, local or gs://.')
  add('--format', default='auto', choices=INPUT_FORMATS,
      help='Input format; auto decides per shard from its first bytes.')
  add('--model', default=models.DEFAULT_MODEL, type=_model_name,
      help='A model of keras.applications by name, any case (vgg16, '
      'resnet50, efficientnetb0, convnexttiny...; `featurize models` lists '
      'them), or the path / gs:// URL of your own Keras model file '
      '(.keras) with one image input.')
  add('--preprocess', choices=models.PREPROCESS_MODES,
      help='How pixels become the model\'s input: caffe, tf, torch or none '
      '(keras.applications.imagenet_utils modes). A named model has its '
      'own; a model file needs it, unless the file records it.')
  add('--weights', default='imagenet',
      help='imagenet, random (seeded), or a path / gs:// URL of the '
      'model\'s official Keras weight file.')
  add('--layer', type=_layer_names,
      help='The model\'s layer whose output is the feature, or several '
      'joined by "," (block3_pool,block4_pool,block5_pool): one forward '
      'pass gives each, and each record holds features/<layer> and '
      'shape/<layer>. Default: the output of the model\'s convolutional '
      'base (block5_pool, conv5_block3_out, top_activation...); '
      '`featurize layers MODEL` lists every layer and what it costs.')
  add('--pooling', default='none', type=_NamesOf(models.POOLINGS, 'pooling'),
      help='Pool a convolutional layer\'s output over its spatial axes: '
      'none, avg or max, for every layer or one per layer joined by ",".')
  add('--precision', choices=models.PRECISIONS,
      help='Default float32 on cpu, bfloat16 on gpu (10x float32\'s speed '
      'there); bfloat16 is several times faster on CPUs with AMX.')
  add('--device', default='cpu', choices=backend.DEVICES,
      help='cpu: Keras on TensorFlow, Pillow decoding. gpu: JPEGs decoded '
      'on the GPU (nvJPEG) and Keras on JAX, one model per GPU; needs '
      'featurize[gpu].')
  add('--batch-size', type=int,
      help='Images per model call (default '
      f'{models.DEFAULT_BATCH_SIZE["cpu"]} on cpu, '
      f'{models.DEFAULT_BATCH_SIZE["gpu"]} on gpu).')
  add('--max-batch-bytes', type=int,
      help='Upper bound on one batch\'s activation memory; lowers the '
      f'batch size when needed (default {models.DEFAULT_MAX_BATCH_BYTES["cpu"]}'
      f' on cpu, {models.DEFAULT_MAX_BATCH_BYTES["gpu"]} on gpu).')
  # default None: --memory-budget auto may choose it when it is not given.
  add('--large-model', action=argparse.BooleanOptionalAction, default=None,
      help='One model per machine, shared by its worker processes, instead '
      'of one per process (on gpu: one process per machine owns the GPUs '
      'and the worker processes send it batches). Off unless '
      '--memory-budget auto plans it.')
  add('--resize', default='center-crop', choices=imaging.RESIZE_POLICIES,
      help='How an image becomes a square model input.')
  add('--image-size', type=int,
      help='Side of the square model input, in pixels (default: the '
      'model\'s own, 224 for most, 299 for Inception and Xception, 331 for '
      'NASNetLarge, 240-600 for EfficientNet B1-B7). center-crop resizes '
      'the shorter side to size x 256/224 first.')
  add('--max-pixels', type=int,
      help='Largest width x height decoded (default 100,000,000, or what '
      '--memory-budget plans).')
  add('--memory-budget', metavar='SIZE|auto',
      help='Memory of one worker process (6GiB, 1.5GiB, 700MiB), or auto: '
      'the machine\'s (or its cgroup\'s) over the worker processes. '
      'featurize plans the batch size and --max-pixels to fit, and where '
      'the run leaves them open the worker processes or threads and '
      '--large-model; it prints the plan and records it in the manifest. '
      'Flags you give are kept, or refused when they cannot fit. CPU runs '
      'on the DirectRunner, Dataflow and Flink.')
  add('--max-image-bytes', type=int, default=256 << 20,
      help='Largest encoded image, record or tar member.')
  add('--image-feature', default='image/encoded',
      help='tf.train.Example feature holding the encoded image (TFRecord '
      'input).')
  add('--key-feature', default='image/filename',
      help='tf.train.Example feature holding the image\'s key (TFRecord '
      'input).')
  add('--label-feature', default='image/class/label',
      help='tf.train.Example feature holding a label to carry over '
      '(TFRecord input).')
  add('--max-error-fraction', type=float, default=0.05,
      help='Fail the run when a larger share of images cannot be used.')
  add('--wait', action=argparse.BooleanOptionalAction, default=True,
      help='Wait for the job to finish and print its counts (default); '
      'with --no-wait, return once the runner has accepted it (a Flex '
      'Template launch must not wait).')
  add('--config', metavar='FILE.yaml',
      help='Runner settings (Beam pipeline options), e.g. '
      'run_configs/local.yaml, with job-flag defaults for that runner '
      'under "featurize:".')
  return added


def _model_name(text: str) -> str:
  """An argparse type: a model of the catalog, in any case, or a model
  file's path (checked once the other flags are known)."""
  if not models.catalog.is_named(text):
    return text.strip()
  try:
    return models.catalog.find(text).name
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from e


_model_name.__name__ = 'model'


def _layer_names(text: str) -> str:
  """An argparse type: layer names joined by ','. Whether the model has
  them is checked once the model is known (``models.resolve``)."""
  names = [name.strip() for name in text.split(',')]
  if not all(names):
    raise argparse.ArgumentTypeError(f'empty layer name in {text!r}')
  return ','.join(names)


_layer_names.__name__ = 'layer'


class _NamesOf:
  """An argparse type: one name of ``allowed``, or several joined by ','.

  Attributes:
    allowed: The names (the Flex Template's regexes are made of them).
  """

  def __init__(self, allowed: Sequence[str], what: str):
    self.allowed = tuple(allowed)
    self.__name__ = what  # argparse names the type in its messages

  def __call__(self, text: str) -> str:
    names = [name.strip() for name in text.split(',')]
    for name in names:
      if name not in self.allowed:
        raise argparse.ArgumentTypeError(
            f'unknown {self.__name__} {name!r}; choose from '
            f'{", ".join(self.allowed)} (several joined by ",")')
    return ','.join(names)


def _or_default(value, default):
  return default if value is None else value


def _model_fields(args: argparse.Namespace) -> dict:
  """The ``ModelConfig`` fields ``--model``, ``--image-size`` and
  ``--preprocess`` make: a model file is read once, here
  (``model_files.configure``)."""
  if not models.catalog.is_named(args.model):
    if args.weights != 'imagenet':  # the default: the file's own
      raise ValueError(f'--model {args.model} holds its own weights; '
                       f'--weights {args.weights} does not apply to it')
    return {**model_files.configure(args.model, args.image_size or 0,
                                    args.preprocess or ''),
            'weights': ''}
  named = models.catalog.find(args.model)
  if args.preprocess and args.preprocess != named.preprocess:
    raise ValueError(f'{named.keras_name} was trained with '
                     f'--preprocess {named.preprocess}, not '
                     f'{args.preprocess}')
  return {'model': named.name, 'weights': args.weights,
          'image_size': args.image_size or named.input_size,
          'preprocess': named.preprocess}


def job_config_from_args(args: argparse.Namespace) -> JobConfig:
  """Builds the frozen job configuration; every job flag reaches it.

  Raises:
    ValueError: the model has no such layer, or refuses the image size
      (``models.resolve``).
  """
  model = _model_fields(args)
  image_size = model['image_size']
  return JobConfig(
      read=ReadConfig(pattern=args.input, format=args.format,
                      image_feature=args.image_feature,
                      key_feature=args.key_feature,
                      label_feature=args.label_feature,
                      max_image_bytes=args.max_image_bytes),
      decode=imaging.DecodeConfig(image_size=image_size,
                                  resize=args.resize,
                                  resize_shorter=imaging.shorter_side(
                                      image_size),
                                  max_pixels=_or_default(
                                      args.max_pixels,
                                      imaging.DecodeConfig.max_pixels)),
      model=models.ModelConfig(layer=args.layer or '',
                              pooling=args.pooling,
                              precision=_or_default(
                                  args.precision,
                                  models.DEFAULT_PRECISION[args.device]),
                              **model,
                              batch_size=_or_default(
                                  args.batch_size,
                                  models.DEFAULT_BATCH_SIZE[args.device]),
                              max_batch_bytes=_or_default(
                                  args.max_batch_bytes,
                                  models.DEFAULT_MAX_BATCH_BYTES[args.device]),
                              large_model=bool(args.large_model),
                              device=args.device,
                              gpu=gpu_settings.from_environ(os.environ)),
      output=OutputConfig(directory=args.output,
                          max_error_fraction=args.max_error_fraction),
  )


# The run config's section of job-flag defaults for that runner.
JOB_SECTION = 'featurize'
# Job flags a run config may not set: they name one run, not a runner.
PER_RUN_FLAGS = ('input', 'output', 'dataset', 'config')


class ParsedRun(NamedTuple):
  """``featurize run`` arguments, parsed.

  Attributes:
    job: The job configuration.
    beam_args: Beam flags: the run config's first, then those of the
      command line; ``--runner=FnApiRunner`` in front when none is given.
    wait: Whether to wait for the job to finish.
  """
  job: JobConfig
  beam_args: List[str]
  wait: bool = True


def _to_flags(settings: dict) -> List[str]:
  """``true`` gives ``--name``; ``false`` or null nothing; a list repeats."""
  flags = []
  for name, value in settings.items():
    for item in value if isinstance(value, list) else [value]:
      if item is True:
        flags.append(f'--{name}')
      elif item is not False and item is not None:
        flags.append(f'--{name}={item}')
  return flags


def read_run_config(path: str,
                    job_flags: Sequence[str]) -> Tuple[List[str], List[str]]:
  """Reads a run config: a YAML mapping of Beam options for one runner.

  Its optional ``featurize:`` mapping holds job-flag defaults that belong
  with the runner (``large_model``, ``precision``, ``batch_size``); the
  command line overrides them. Booleans there are given as ``--flag`` or
  ``--no-flag``.

  Returns:
    The Beam flags and the job flags the file sets.

  Raises:
    ValueError: the file is not a mapping, names a job setting among the
      Beam options, or an unknown or per-run flag under ``featurize:``.
  """
  with open(path) as f:
    settings = yaml.safe_load(f) or {}
  if not isinstance(settings, dict):
    raise ValueError(f'{path}: expected a mapping of Beam options')
  job_defaults = settings.pop(JOB_SECTION, None) or {}
  if not isinstance(job_defaults, dict):
    raise ValueError(f'{path}: {JOB_SECTION!r} must be a mapping of job flags')
  for name in settings:
    if name.replace('_', '-') in job_flags:
      raise ValueError(f'{path}: {name!r} is a job setting; put it under '
                       f'{JOB_SECTION!r} or on the command line')
  job_args = []
  for name, value in job_defaults.items():
    flag = name.replace('_', '-')
    if flag not in job_flags or flag in PER_RUN_FLAGS:
      raise ValueError(f'{path}: {JOB_SECTION}.{name} is not a job flag a '
                       'run config may set')
    if value is False:
      job_args.append(f'--no-{flag}')
    else:
      job_args += _to_flags({flag: value})
  return _to_flags(settings), job_args


def run_parser() -> argparse.ArgumentParser:
  """A parser of ``featurize run``'s job flags."""
  parser = argparse.ArgumentParser(prog='featurize run')
  add_job_arguments(parser)
  add_lock_arguments(parser)
  return parser


def add_lock_arguments(
    parser: argparse.ArgumentParser) -> List[argparse.Action]:
  """Adds the flags of the output's lock
  (``transforms/coordination/output_lock.py``); returns them."""
  return [
      parser.add_argument(
          '--lock-timeout', '--lock_timeout', type=float,
          default=lock.DEFAULT_TIMEOUT_S / 3600, metavar='HOURS',
          help='Take over the output\'s lock from a job older than this '
          f'many hours (default {lock.DEFAULT_TIMEOUT_S / 3600:g}): one '
          'that was killed. A local job\'s lock goes as soon as its '
          'process is gone.'),
      parser.add_argument(
          '--break-lock', '--break_lock', action='store_true',
          help='Take over the output\'s lock now (its job is dead).')]


def add_refresh_arguments(
    parser: argparse.ArgumentParser) -> List[argparse.Action]:
  """Adds the flags of ``featurize refresh`` beyond the job flags;
  returns them."""
  plan_only = parser.add_argument(
      '--plan-only', '--plan_only', action='store_true',
      help='Print what the refresh would reuse, read and drop, and stop.')
  locking = add_lock_arguments(parser)
  keep = parser.add_argument(
      '--keep', type=int, metavar='N',
      help='Keep the newest N versions; delete the files no kept version '
      'lists.')
  return [plan_only, *locking, keep]


def refresh_parser() -> argparse.ArgumentParser:
  """A parser of ``featurize refresh``'s flags."""
  parser = argparse.ArgumentParser(prog='featurize refresh')
  add_job_arguments(parser, output_flag='--dataset')
  add_refresh_arguments(parser)
  return parser


def job_actions(job: str = 'run') -> List[argparse.Action]:
  """The flags of ``featurize run`` (or ``refresh``), in order: for the
  Flex Templates' parameters and the run configs' checks."""
  parser = argparse.ArgumentParser(add_help=False)
  if job == 'refresh':
    return (add_job_arguments(parser, output_flag='--dataset') +
            add_refresh_arguments(parser))
  return add_job_arguments(parser) + add_lock_arguments(parser)


def job_flag_names(job: str = 'run') -> List[str]:
  """The flags of ``featurize run`` (or ``refresh``) by their first
  spelling, without the dashes: what a run config may name."""
  return [a.option_strings[0][2:] for a in job_actions(job)]


def names_runner(flags: Sequence[str]) -> bool:
  """Whether Beam flags already choose a runner."""
  return any(f == '--runner' or f.startswith('--runner=') for f in flags)


class ParsedCommand(NamedTuple):
  """A launching command's arguments, parsed once.

  Attributes:
    run: The job, its Beam flags and whether to wait.
    flags: Every flag of the command (the console's, the lock's, the
      refresh's), as argparse gives them.
    precision_given: Whether ``--precision`` was set, on the command line
      or in the run config, rather than left to the device's default.
  """
  run: ParsedRun
  flags: argparse.Namespace
  precision_given: bool


def parse_flags(argv: Optional[Sequence[str]],
                parser: Optional[argparse.ArgumentParser] = None,
                job: str = 'run') -> Tuple[argparse.Namespace, List[str]]:
  """Parses a launching command's flags, the run config's job defaults
  in front of the command line's (so that they meet the same checks and
  the command line wins); returns them and the Beam flags: the run
  config's, then those the parser does not know, in order.

  Args:
    argv: The command's arguments.
    parser: The command's parser (default ``featurize run``'s).
    job: ``run`` or ``refresh``: the job flags a run config may set.
  """
  parser = parser or run_parser()
  argv = list(argv or [])
  # Only --config first: the file's job defaults go before the rest.
  config = _config_parser().parse_known_args(argv)[0].config
  file_flags, file_job_args = (read_run_config(config, job_flag_names(job))
                               if config else ([], []))
  args, beam_args = parser.parse_known_args(file_job_args + argv)
  beam_flags = file_flags + list(beam_args)
  if not names_runner(beam_flags):
    # Beam's default, the DirectRunner, first tries to download the Prism
    # runner; its batch engine, FnApiRunner, runs here without it.
    beam_flags.insert(0, f'--runner={DEFAULT_RUNNER}')
  return args, beam_flags


def _config_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(add_help=False)
  parser.add_argument('--config')
  return parser


def command_of(args: argparse.Namespace,
               beam_flags: List[str]) -> ParsedCommand:
  """The job that parsed flags describe, ``--memory-budget``'s plan
  applied (``planned``).

  Raises:
    ValueError: the flags cannot make a job (the budget cannot hold it,
      bad GPU settings...).
  """
  job = job_config_from_args(args)
  if args.memory_budget:
    job, beam_flags = planned(job, args, beam_flags)
  return ParsedCommand(ParsedRun(job, beam_flags, args.wait), args,
                       args.precision is not None)


def parse_command(argv: Optional[Sequence[str]],
                  parser: Optional[argparse.ArgumentParser] = None,
                  job: str = 'run') -> ParsedCommand:
  """Parses a launching command (``parse_flags``, ``command_of``)."""
  return command_of(*parse_flags(argv, parser, job))


def parse_run_args(
    argv: Optional[Sequence[str]],
    parser: Optional[argparse.ArgumentParser] = None) -> ParsedRun:
  """Parses ``featurize run`` arguments into the job and its Beam flags
  (``parse_command``'s ``run``)."""
  return parse_command(argv, parser).run


def planned(job: JobConfig, args: argparse.Namespace,
            beam_flags: Sequence[str]) -> Tuple[JobConfig, List[str]]:
  """The job as ``--memory-budget`` plans it (``memory_plan``), with the
  plan, and the Beam flags with the worker counts it chose added.

  Raises:
    ValueError: the budget cannot hold the run, or the runner's options do
      not say where its workers live.
  """
  workers = topology.runner_workers(beam_flags)
  layout = memory_plan.plan_layout(
      args.memory_budget, workers, job.model, job.decode,
      batch_given=args.batch_size is not None,
      pixels_given=args.max_pixels is not None,
      large_model_given=args.large_model is not None)
  plan = layout.plan
  model = dataclasses.replace(job.model, batch_size=plan.batch_size,
                              large_model=layout.large_model)
  job = dataclasses.replace(
      job, model=model,
      decode=dataclasses.replace(job.decode, max_pixels=plan.max_pixels),
      memory_plan=plan)
  # Later flags win in Beam's parser.
  return job, list(beam_flags) + list(layout.beam_flags)
