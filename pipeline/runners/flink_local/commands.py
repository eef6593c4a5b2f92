"""``featurize flink-local setup|start|status|stop``.

    featurize flink-local setup    # once: download Flink, build the job server
    featurize flink-local start    # JobManager, 2 TaskManagers, job server,
                                   # worker pools
    featurize run --config run_configs/flink.yaml --input ... --output ...
    featurize flink-local status
    featurize flink-local stop
"""
import argparse
import dataclasses
import os
import sys
from typing import List, Optional, Sequence

from pipeline.runners.flink_local import (cluster, configuration,
                                          distribution, job_server, services)
from pipeline.runners.flink_local.settings import ClusterSettings, default_home


def register(commands) -> None:
  """Adds ``flink-local`` to the console script's commands."""
  parser = commands.add_parser(
      'flink-local', help='Set up, start, check and stop a local Flink '
      'cluster for featurize (see run_configs/flink.yaml).')
  add_arguments(parser)
  parser.set_defaults(handler=main)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The ``flink-local`` sub-commands and their flags."""
  commands = parser.add_subparsers(dest='action', required=True)

  def common(sub):
    sub.add_argument('--home', default=default_home(),
                     help='Cache of downloads, the Flink distribution and '
                     'the job server (default %(default)s; '
                     '$FEATURIZE_FLINK_HOME).')
    sub.add_argument('--cluster-dir',
                     help='The cluster\'s folder: configuration, logs, PIDs '
                     '(default HOME/cluster).')

  setup = commands.add_parser(
      'setup', help='Download Flink and assemble the Beam job server '
      '(cached; the only step that downloads).')
  common(setup)
  setup.add_argument('--job-server-jar',
                     help='Use this official beam-runners-flink-1.19-job-'
                     'server jar instead of assembling one with Maven.')

  start = commands.add_parser(
      'start', help='Start what is not running and wait until healthy.')
  common(start)
  start.add_argument('--job-server-jar')
  start.add_argument('--taskmanagers', type=int,
                     help='How many TaskManagers, each with a worker pool '
                     '(default 2).')
  start.add_argument('--slots', type=int,
                     help='Task slots per TaskManager (default 2).')
  start.add_argument('--taskmanager-memory',
                     help='TaskManager process size (default 2560m); the '
                     'Python workers are outside it.')
  start.add_argument('--worker-python',
                     help='Python of the SDK workers; its environment must '
                     'hold featurize (default: the Python running this).')
  start.add_argument('--timeout', type=float, default=240,
                     help='Seconds to wait until healthy.')

  status = commands.add_parser('status', help='What runs, what Flink says.')
  common(status)

  stop = commands.add_parser(
      'stop', help='Stop what `start` started (all, or the named services).')
  common(stop)
  stop.add_argument('services', nargs='*',
                    help='jobmanager, tm-N, job-server, pool-N (default: '
                    'all).')


def _settings(args: argparse.Namespace) -> ClusterSettings:
  """The flags given, over defaults; while a cluster runs in that folder,
  over its settings instead (so that `start` after a crash brings back
  the same cluster without flags)."""
  kwargs = {'home': args.home, 'cluster_dir': args.cluster_dir}
  cluster_dir = ClusterSettings(**kwargs).cluster_dir
  assert cluster_dir is not None  # ClusterSettings.__post_init__ sets it
  if os.path.isfile(os.path.join(cluster_dir, 'settings.json')):
    saved = configuration.load_settings(cluster_dir)
    if any(s.running for s in cluster.status(saved).services):
      kwargs = dataclasses.asdict(saved)
  for flag in ('job_server_jar', 'taskmanagers', 'slots',
               'taskmanager_memory', 'worker_python'):
    if getattr(args, flag, None) is not None:
      kwargs[flag] = getattr(args, flag)
  return ClusterSettings(**kwargs)


def main(argv: Optional[Sequence[str]] = None,
         parser: Optional[argparse.ArgumentParser] = None) -> int:
  """Runs ``featurize flink-local``; returns the exit status."""
  if parser is None:
    parser = argparse.ArgumentParser(prog='featurize flink-local')
    add_arguments(parser)
  args = parser.parse_args(argv)
  try:
    if args.action == 'setup':
      settings = _settings(args)
      distribution.prepare(settings)
      job_server.prepare(settings)
      print(f'flink-local: ready under {settings.home}')
      return 0
    if args.action == 'start':
      settings = _settings(args)
      current = cluster.start(settings, sys.executable, args.timeout)
      print(cluster.describe(settings, current))
      for name, problem in current.pool_problems.items():
        print(f'flink-local: warning: {name}: {problem}; jobs will fail',
              file=sys.stderr)
      return 0
    cluster_dir = _settings(args).cluster_dir
    assert cluster_dir is not None  # ClusterSettings.__post_init__ sets it
    settings = configuration.load_settings(cluster_dir)
    if args.action == 'status':
      current = cluster.status(settings)
      print(cluster.describe(settings, current))
      return 0 if current.healthy and not current.pool_problems else 1
    names: Optional[List[str]] = args.services or None
    unknown = set(names or ()) - set(services.service_names(settings))
    if unknown:
      print(f'flink-local: no service named {", ".join(sorted(unknown))}',
            file=sys.stderr)
      return 2
    stopped = cluster.stop(settings, names)
    print('flink-local: stopped '
          + (', '.join(stopped) or 'nothing (nothing was running)'))
    return 0
  except (configuration.ClusterError, distribution.SetupError) as e:
    print(f'flink-local: error: {e}', file=sys.stderr)
    return 1
