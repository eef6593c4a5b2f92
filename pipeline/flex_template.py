"""Entry point of the Dataflow Flex Template (``FLEX_TEMPLATE_PYTHON_PY_FILE``).

The template launcher runs this file with every template parameter as
``--name=value`` and the job's Dataflow options (project, region, ...). It
runs ``featurize run`` on them, without waiting: a Flex Template launch must
return once Dataflow has accepted the job.
"""
import argparse
import json
import re
import sys
from typing import List, Optional, Sequence

# Job flags that are no template parameters: a run config is a file of the
# launching machine; a template launch never waits.
NOT_PARAMETERS = ('help', 'config', 'wait')


def _parameters() -> List[argparse.Action]:
  """The ``featurize run`` flags that are template parameters, in order."""
  from pipeline import options
  return [a for a in options.run_parser()._actions
          if a.option_strings and a.dest not in NOT_PARAMETERS]


def template_args(argv: Sequence[str]) -> List[str]:
  """Turns the launcher's arguments into ``featurize run`` arguments.

  A switch such as ``--large_model=true`` becomes ``--large_model`` and
  ``=false`` becomes ``--no-large_model`` (a template parameter always
  carries a value); ``--no-wait`` goes first, and ``--runner`` is set to
  DataflowRunner unless the launcher names one.
  """
  from pipeline import options
  switches = {a.dest for a in _parameters()
              if isinstance(a, argparse.BooleanOptionalAction)}
  args = ['--no-wait']
  for arg in argv:
    name, _, value = arg.partition('=')
    if name[2:] in switches and value:
      if value.lower() not in ('true', 'false'):
        raise ValueError(f'{name} must be true or false, not {value!r}')
      args.append(name if value.lower() == 'true' else f'--no-{name[2:]}')
    else:
      args.append(arg)
  if not options.names_runner(args):
    # featurize's own default is the local FnApiRunner: never right here.
    args.append('--runner=DataflowRunner')
  return args


def metadata() -> dict:
  """The template's ``metadata.json``: one parameter per job flag.

  Built from the ``featurize run`` parser, so that the committed file
  (``run_configs/flex_template_metadata.json``) can be checked against it.
  """
  parameters = []
  for action in _parameters():
    if action.choices:
      pattern = '^(' + '|'.join(re.escape(c) for c in action.choices) + ')$'
    elif isinstance(action, argparse.BooleanOptionalAction):
      pattern = '^(true|false)$'
    elif action.type is int:
      pattern = '^[0-9]+$'
    elif action.type is float:
      pattern = '^[0-9]*[.]?[0-9]+$'
    else:
      pattern = None
    help_text = action.help or ''
    if action.default not in (None, False):
      help_text += f' Default: {action.default}.'
    parameter = {'name': action.dest,
                 'label': action.dest.replace('_', ' ').capitalize(),
                 'helpText': help_text.strip(),
                 'isOptional': not action.required}
    if pattern:
      parameter['regexes'] = [pattern]
    parameters.append(parameter)
  return {
      'name': 'featurize',
      'description': 'VGG16 features of image shards (TFRecord, WebDataset '
                     'tar or image files) as sharded TFRecord files, with a '
                     'manifest and one error line per unusable image.',
      'parameters': parameters,
  }


def write_metadata(path: str) -> None:
  with open(path, 'w') as f:
    json.dump(metadata(), f, indent=2)
    f.write('\n')


def main(argv: Optional[Sequence[str]] = None) -> int:
  from pipeline import cli
  argv = sys.argv[1:] if argv is None else argv
  return cli.main(['run', *template_args(argv)])


if __name__ == '__main__':
  sys.exit(main())
