"""Entry point of the Dataflow Flex Template (``FLEX_TEMPLATE_PYTHON_PY_FILE``).

The template launcher runs this file with every template parameter as
``--name=value`` and the job's Dataflow options (project, region, ...). It
runs ``featurize run`` on them, or ``featurize refresh`` when they name a
``dataset``, without waiting: a Flex Template launch must return once
Dataflow has accepted the job.

One container image serves both jobs; each has a template spec file of its
own, built from its metadata (``run_configs/flex_template_metadata.json``,
``run_configs/flex_template_refresh_metadata.json``), so that each
template lists and checks only its own parameters.
"""
import argparse
import json
import re
import sys
from typing import List, Optional, Sequence

# Job flags that are no template parameters: a run config is a file of the
# launching machine; a template launch never waits.
NOT_PARAMETERS = ('help', 'config', 'wait')

DESCRIPTIONS = {
    'run': 'VGG16 features of image shards (TFRecord, WebDataset tar or '
           'image files) as sharded TFRecord files, with a manifest and one '
           'error line per unusable image.',
    'refresh': 'Brings a versioned VGG16 feature dataset up to date with '
               'the image shards a pattern matches now: only new and '
               'changed shards are read, and a new version is published '
               'atomically.',
}


def job_of(argv: Sequence[str]) -> str:
  """``refresh`` for a launch that names a dataset, else ``run``."""
  names = {arg.partition('=')[0] for arg in argv}
  return 'refresh' if '--dataset' in names else 'run'


def parameter_name(action: argparse.Action) -> str:
  """A flag's template parameter name: its first spelling, with
  underscores (``--batch-size`` is ``batch_size``, ``--dataset`` is
  ``dataset`` although it sets ``output``)."""
  return action.option_strings[0][2:].replace('-', '_')


def _parameters(job: str = 'run') -> List[argparse.Action]:
  """The flags of ``featurize JOB`` that are template parameters, in
  order."""
  from pipeline import options
  return [a for a in options.job_actions(job)
          if a.dest not in NOT_PARAMETERS]


def template_args(argv: Sequence[str]) -> List[str]:
  """Turns the launcher's arguments into arguments of the job they name
  (``job_of``).

  A switch such as ``--large_model=true`` becomes ``--large_model`` and
  ``=false`` becomes ``--no-large_model`` or is dropped (a template
  parameter always carries a value); ``--no-wait`` goes first, and
  ``--runner`` is set to DataflowRunner unless the launcher names one.
  """
  from pipeline import options
  actions = {parameter_name(a): a for a in _parameters(job_of(argv))}
  args = ['--no-wait']
  for arg in argv:
    name, _, value = arg.partition('=')
    action = actions.get(name[2:])
    if action is not None and action.nargs == 0 and value:
      if value.lower() not in ('true', 'false'):
        raise ValueError(f'{name} must be true or false, not {value!r}')
      if value.lower() == 'true':
        args.append(name)
      elif isinstance(action, argparse.BooleanOptionalAction):
        args.append(f'--no-{name[2:]}')
    else:
      args.append(arg)
  if not options.names_runner(args):
    # featurize's own default is the local FnApiRunner: never right here.
    args.append('--runner=DataflowRunner')
  return args


def metadata(job: str = 'run') -> dict:
  """The template's ``metadata.json``: one parameter per flag of ``job``.

  Built from the job's parser, so that the committed files can be checked
  against it.
  """
  parameters = []
  for action in _parameters(job):
    names = getattr(action.type, 'allowed', None)  # one or a ','-list
    if action.choices:
      pattern = '^(' + '|'.join(re.escape(c) for c in action.choices) + ')$'
    elif names:
      one = '(' + '|'.join(re.escape(c) for c in names) + ')'
      pattern = f'^{one}(,{one})*$'
    elif action.nargs == 0:  # a switch
      pattern = '^(true|false)$'
    elif action.type is int:
      pattern = '^[0-9]+$'
    elif action.type is float:
      pattern = '^[0-9]*[.]?[0-9]+$'
    else:
      pattern = None
    help_text = action.help or ''
    if action.default not in (None, False) and '(default' not in help_text:
      help_text += f' Default: {action.default}.'
    name = parameter_name(action)
    parameter = {'name': name,
                 'label': name.replace('_', ' ').capitalize(),
                 'helpText': help_text.strip(),
                 'isOptional': not action.required}
    if pattern:
      parameter['regexes'] = [pattern]
    parameters.append(parameter)
  return {'name': 'featurize' if job == 'run' else f'featurize-{job}',
          'description': DESCRIPTIONS[job],
          'parameters': parameters}


def write_metadata(path: str, job: str = 'run') -> None:
  with open(path, 'w') as f:
    json.dump(metadata(job), f, indent=2)
    f.write('\n')


def main(argv: Optional[Sequence[str]] = None) -> int:
  from pipeline import cli
  argv = sys.argv[1:] if argv is None else argv
  return cli.main([job_of(argv), *template_args(argv)])


if __name__ == '__main__':
  sys.exit(main())
