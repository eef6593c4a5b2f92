"""The ``featurize`` console script.

``featurize run ...`` runs a job; ``featurize demo`` runs the same job on a
small dataset of real photos that it writes first; ``featurize refresh``
brings a versioned dataset up to date. The other commands (``files``,
``history``, ``inspect``, ``models``, ``layers``, ``flink-local``) live
with what they serve; each module adds its own with
``register(commands)`` (``REGISTERS``).
"""
import argparse
import functools
import logging
import os
import sys
import traceback
from typing import Optional, Sequence

from pipeline import (console, demo, job_metrics, model_commands, options,
                      topology)
from pipeline.inspection import inspect_output
from pipeline.refresh import commands as refresh_commands
from pipeline.refresh import refresh_job
from pipeline.run import RunSummary, run_job
from pipeline.runners.flink_local import commands as flink_local_commands
from transforms.coordination import output_lock as lock


def _print_summary(summary: RunSummary) -> None:
  if summary.state == 'DRY_RUN':
    print('featurize: dry run: the job was built and checked, not submitted')
    return
  if summary.state == 'SUBMITTED':
    print(f'featurize: job {summary.job_id or ""} submitted, not awaited; '
          f'{summary.output}/_SUCCESS appears when it has finished')
    return
  counts = summary.counts
  print(f'featurize: {counts["images_in"]} images in, '
        f'{counts["features"]} feature records, {counts["errors"]} errors')
  if summary.elapsed_s:
    timing = (f'featurize: {summary.elapsed_s:.1f} s, '
              f'{counts["images_in"] / summary.elapsed_s:.1f} images/s')
    if summary.first_record_s is not None:
      timing += f'; first record after {summary.first_record_s:.1f} s'
    print(timing)
  if summary.model_loads is not None:
    model = (summary.manifest or {}).get('model', 'the model')
    print(f'featurize: {model} loaded {summary.model_loads} time(s) over all '
          'workers')
  if summary.metrics:
    for line in job_metrics.summary_lines(summary.metrics):
      print(f'featurize: {line}')
  shards = len((summary.manifest or {}).get('feature_shards', []))
  print(f'featurize: output in {summary.output} ({shards} feature shards; '
        'manifest.json, errors-*.jsonl, _SUCCESS)')


def _add_console_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
      '--verbose', action='store_true',
      help='Show start-up logs, Beam\'s log and a failure\'s traceback.')
  parser.add_argument(
      '--quiet', action='store_true',
      help='No progress line while a local job runs.')


def register(commands) -> None:
  """Adds ``run``, ``demo`` and ``refresh``: the commands that launch a
  job, which share one handler (``_launch``)."""
  run_parser = commands.add_parser(
      'run', help='Extract features from --input into --output.')
  options.add_job_arguments(run_parser)
  options.add_lock_arguments(run_parser)
  demo_parser = commands.add_parser(
      'demo', help='Write a demo dataset of real photos and run on it.')
  options.add_job_arguments(demo_parser, require_io=False)
  # From a source checkout the demo uses run_configs/local.yaml; an
  # installed copy has no run_configs/ and runs on featurize's default
  # runner (the same FnApiRunner).
  demo_parser.set_defaults(
      weights='random',
      config=demo.LOCAL_CONFIG if os.path.isfile(demo.LOCAL_CONFIG) else None)
  refresh_parser = commands.add_parser(
      'refresh', help='Bring a versioned feature dataset up to date with '
      'the shards --input matches now, reading only new and changed ones.')
  options.add_job_arguments(refresh_parser, output_flag='--dataset')
  options.add_refresh_arguments(refresh_parser)
  for name, parser in (('run', run_parser), ('demo', demo_parser),
                       ('refresh', refresh_parser)):
    _add_console_arguments(parser)
    parser.set_defaults(handler=functools.partial(_launch, name))


# Each module adds its commands with register(commands), setting
# handler=f(argv, parser) -> exit status on each command's parser.
REGISTERS = (register, model_commands.register, refresh_commands.register,
             inspect_output.register, flink_local_commands.register)


def _parser():
  """The top-level parser and its commands' (``argparse``'s subparsers)."""
  parser = argparse.ArgumentParser(
      prog='featurize',
      description='Extract CNN features (VGG16, ResNet, EfficientNet... any '
      'model of keras.applications) from image shards with Beam. '
      'Flags featurize does not know go to Beam (--runner, ...).')
  commands = parser.add_subparsers(dest='command', required=True)
  for add in REGISTERS:
    add(commands)
  return parser, commands


def _quiet_known_noise(record: logging.LogRecord) -> bool:
  # Beam 2.77's RunInference imports torch to get at the resource module;
  # without torch it warns on every model load that memory "cannot be
  # fetched". Nothing is wrong, so keep it out of the user's terminal.
  return 'Resource module is not available' not in record.getMessage()


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of the console script; returns the exit status."""
  logging.basicConfig(level=logging.WARNING,
                      format='%(levelname)s %(name)s: %(message)s')
  logging.getLogger().addFilter(_quiet_known_noise)
  argv = list(sys.argv[1:] if argv is None else argv)
  parser, commands = _parser()
  if not argv or argv[0] not in commands.choices:
    parser.parse_args(argv)  # prints usage or help, and exits
  command = commands.choices[argv[0]]
  return command.get_default('handler')(argv[1:], command)


def _launch(command: str, rest: Sequence[str],
            parser: argparse.ArgumentParser) -> int:
  """Runs ``featurize run``, ``demo`` or ``refresh``; returns the exit
  status. Flags the parser does not know go to Beam."""
  flags = None
  try:
    flags, beam_flags = options.parse_flags(
        rest, parser, 'refresh' if command == 'refresh' else 'run')
    # Before the job is built: building it reads the model's graph, which
    # imports Keras, whose start-up lines only --verbose shows.
    console.quiet_start(flags.verbose, model_here=False)
    if command == 'demo':  # local: the model runs in this process
      console.quiet_start(flags.verbose, model_here=True,
                          device=flags.device)
      demo.fill_in(flags)
    command_line = options.command_of(flags, beam_flags)
    parsed = command_line.run
    line = console.precision_line(parsed.job.model,
                                  command_line.precision_given)
    if line:
      print(line, flush=True)
    if parsed.job.memory_plan is not None:
      print(f'featurize: {parsed.job.memory_plan.line()}', flush=True)
    console.quiet_start(flags.verbose,
                        model_here=topology.runs_locally(parsed.beam_args),
                        device=parsed.job.model.device)
    if command == 'refresh':
      refresh_job.refresh(parsed.job, parsed.beam_args,
                          plan_only=flags.plan_only,
                          lock_timeout_s=flags.lock_timeout * 3600,
                          break_lock=flags.break_lock, keep=flags.keep,
                          wait=parsed.wait, show_progress=not flags.quiet)
      return console.EXIT_OK
    summary = run_job(
        parsed.job, parsed.beam_args, wait=parsed.wait,
        lock_timeout_s=getattr(flags, 'lock_timeout',
                               lock.DEFAULT_TIMEOUT_S / 3600) * 3600,
        break_lock=getattr(flags, 'break_lock', False),
        show_progress=not flags.quiet)
  except Exception as e:  # pylint: disable=broad-except
    status = console.exit_status(e)  # re-raises what it does not know
    # (A run config that cannot be read fails before the flags exist.)
    verbose = flags.verbose if flags is not None else '--verbose' in rest
    if verbose:
      traceback.print_exc()
    print(console.failure_message(e, verbose), file=sys.stderr)
    return status
  _print_summary(summary)
  return console.EXIT_OK


if __name__ == '__main__':
  sys.exit(main())
