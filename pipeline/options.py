"""Command-line parsing: job flags to ``JobConfig``, the rest to Beam.

``parse_run_args`` turns ``featurize run`` arguments into a ``JobConfig``
and a list of Beam flags: the runner flags of ``--config FILE.yaml`` first,
then every flag featurize does not know, in order (so the command line
wins over the file).
"""
import argparse
from typing import List, Optional, Sequence, Tuple

import yaml

from pipeline.config import JobConfig
from transforms import imaging, vgg16
from transforms.read import INPUT_FORMATS, ReadConfig
from transforms.output_files import OutputConfig

DEFAULT_RUNNER = 'FnApiRunner'


def add_job_arguments(parser: argparse.ArgumentParser,
                      require_io: bool = True) -> None:
  """Adds the job flags of ``featurize run`` to ``parser``."""
  parser.add_argument('--input', required=require_io, metavar='PATTERN',
                      help='Shard or file pattern, local or gs://.')
  parser.add_argument('--output', required=require_io, metavar='DIR',
                      help='Output folder, local or gs://.')
  parser.add_argument('--format', default='auto', choices=INPUT_FORMATS,
                      help='Input format; auto decides per shard from its '
                      'first bytes.')
  parser.add_argument('--weights', default='imagenet',
                      help='imagenet, random, or a path / gs:// URL of an '
                      'official Keras VGG16 weight file.')
  parser.add_argument('--layer', default='block5_pool', choices=vgg16.LAYERS)
  parser.add_argument('--pooling', default='none', choices=vgg16.POOLINGS)
  parser.add_argument('--precision', default='float32',
                      choices=vgg16.PRECISIONS)
  parser.add_argument('--batch-size', type=int, default=16,
                      help='Images per model call.')
  parser.add_argument('--max-batch-bytes', type=int, default=1 << 30,
                      help='Upper bound on one batch\'s activation memory; '
                      'lowers the batch size when needed.')
  parser.add_argument('--large-model', action='store_true',
                      help='One model per machine, shared by its worker '
                      'processes, instead of one per process.')
  parser.add_argument('--resize', default='center-crop',
                      choices=imaging.RESIZE_POLICIES)
  parser.add_argument('--image-size', type=int, default=224)
  parser.add_argument('--max-pixels', type=int, default=100_000_000,
                      help='Largest width x height decoded.')
  parser.add_argument('--max-image-bytes', type=int, default=256 << 20,
                      help='Largest encoded image, record or tar member.')
  parser.add_argument('--image-feature', default='image/encoded')
  parser.add_argument('--key-feature', default='image/filename')
  parser.add_argument('--label-feature', default='image/class/label')
  parser.add_argument('--max-error-fraction', type=float, default=0.05,
                      help='Fail the run when a larger share of images '
                      'cannot be used.')
  parser.add_argument('--config', metavar='FILE.yaml',
                      help='Runner settings (Beam pipeline options), e.g. '
                      'run_configs/local.yaml.')


def job_config_from_args(args: argparse.Namespace) -> JobConfig:
  """Builds the frozen job configuration; every job flag reaches it."""
  return JobConfig(
      read=ReadConfig(pattern=args.input, format=args.format,
                      image_feature=args.image_feature,
                      key_feature=args.key_feature,
                      label_feature=args.label_feature,
                      max_image_bytes=args.max_image_bytes),
      decode=imaging.DecodeConfig(image_size=args.image_size,
                                  resize=args.resize,
                                  max_pixels=args.max_pixels),
      model=vgg16.ModelConfig(weights=args.weights, layer=args.layer,
                              pooling=args.pooling, precision=args.precision,
                              image_size=args.image_size,
                              batch_size=args.batch_size,
                              max_batch_bytes=args.max_batch_bytes,
                              large_model=args.large_model),
      output=OutputConfig(directory=args.output,
                          max_error_fraction=args.max_error_fraction),
  )


def runner_flags_from_file(path: str, job_flags: Sequence[str]) -> List[str]:
  """Turns a run config (a YAML mapping of Beam options) into flags.

  ``true`` gives ``--name``; ``false`` or null leaves the option out; a list
  repeats the flag (``experiments``).

  Raises:
    ValueError: the file is not a mapping, or names a job setting (those
      belong on the command line, not with the runner settings).
  """
  with open(path) as f:
    settings = yaml.safe_load(f) or {}
  if not isinstance(settings, dict):
    raise ValueError(f'{path}: expected a mapping of Beam options')
  flags = []
  for name, value in settings.items():
    if name.replace('_', '-') in job_flags:
      raise ValueError(f'{path}: {name!r} is a job setting; run configs hold '
                       'runner settings only')
    values = value if isinstance(value, list) else [value]
    for item in values:
      if item is True:
        flags.append(f'--{name}')
      elif item is not False and item is not None:
        flags.append(f'--{name}={item}')
  return flags


def parse_run_args(
    argv: Optional[Sequence[str]],
    parser: Optional[argparse.ArgumentParser] = None
) -> Tuple[JobConfig, List[str]]:
  """Parses ``featurize run`` arguments.

  Returns:
    The job configuration and the Beam flags (run config first; without
    any ``--runner``, ``--runner=FnApiRunner`` in front).
  """
  if parser is None:
    parser = argparse.ArgumentParser(prog='featurize run')
    add_job_arguments(parser)
  args, beam_args = parser.parse_known_args(argv)
  job_flags = [a.option_strings[0][2:] for a in parser._actions
               if a.option_strings and a.option_strings[0].startswith('--')]
  file_flags = (runner_flags_from_file(args.config, job_flags)
                if args.config else [])
  beam_flags = file_flags + list(beam_args)
  if not any(f == '--runner' or f.startswith('--runner=') for f in beam_flags):
    # Beam's default, the DirectRunner, first tries to download the Prism
    # runner; its batch engine, FnApiRunner, runs here without it.
    beam_flags.insert(0, f'--runner={DEFAULT_RUNNER}')
  return job_config_from_args(args), beam_flags
