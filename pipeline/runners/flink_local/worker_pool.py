"""One Beam worker pool: where a TaskManager starts its Python SDK workers.

``python -m pipeline.runners.flink_local.worker_pool --address
127.0.50.1:50000``

Beam's ``worker_pool_main`` binds every interface (``[::]:PORT``), so two
pools cannot share a port on one machine, and the EXTERNAL environment
names one address for the whole job. This runs Beam's own pool servicer
bound to one loopback address per TaskManager instead; each TaskManager
resolves the environment's host name to its own pool.

Two more things the stock pool does not do:

* Workers start through ``sdk_boot`` (Beam's container contract), so they
  get the job's pipeline options and send their logs to the TaskManager.
* The pool checks once, at start, that its worker Python imports
  apache-beam (the launcher's version) and featurize. A worker that cannot
  would die before connecting, and the TaskManager would wait for it
  forever (the job hangs RUNNING); instead, every start request is
  answered with that error, so the job fails at once and says why.
"""
import argparse
import json
import logging
import os
import subprocess
import sys
import time
from typing import Optional, Sequence

import apache_beam
import grpc
from apache_beam.portability.api import (beam_fn_api_pb2,
                                         beam_fn_api_pb2_grpc)
from apache_beam.runners.worker.worker_pool_main import \
    BeamFnExternalWorkerPoolServicer
from apache_beam.utils import thread_pool_executor

_LOGGER = logging.getLogger('featurize.worker_pool')

# Importing what a worker unpickles: featurize's transforms and, through
# them, Keras and TensorFlow.
_IMPORT_CHECK = ('import apache_beam, pipeline.build; '
                 'print(apache_beam.__version__)')
_CHECK_TIMEOUT_S = 300


def check_worker_python(python: str) -> Optional[str]:
  """Why ``python`` cannot run featurize's workers, or None if it can.

  Runs outside any source checkout (``cwd=/``), so only what is installed
  in that environment counts.
  """
  try:
    result = subprocess.run([python, '-c', _IMPORT_CHECK], cwd='/',
                            capture_output=True, text=True,
                            timeout=_CHECK_TIMEOUT_S)
  except (OSError, subprocess.TimeoutExpired) as e:
    return f'worker Python {python} cannot be run: {e}'
  if result.returncode != 0:
    lines = result.stderr.strip().splitlines() or ['(no output)']
    return (f'worker Python {python} cannot import featurize and '
            f'apache-beam: {lines[-1]}')
  version = result.stdout.strip().splitlines()[-1]
  if version != apache_beam.__version__:
    return (f'worker Python {python} has apache-beam {version}, the '
            f'pool {apache_beam.__version__}')
  return None


class CheckedWorkerPoolServicer(BeamFnExternalWorkerPoolServicer):
  """Beam's servicer, refusing to start workers that could not run."""

  def __init__(self, problem: Optional[str], **kwargs):
    super().__init__(**kwargs)
    self._problem = problem

  def StartWorker(self, start_worker_request, context):
    if self._problem:
      _LOGGER.error('Refusing worker %s: %s', start_worker_request.worker_id,
                    self._problem)
      return beam_fn_api_pb2.StartWorkerResponse(
          error=f'featurize worker pool: {self._problem}')
    return super().StartWorker(start_worker_request, context)


def write_boot_script(path: str, python: str) -> str:
  """The container executable: ``sdk_boot`` under the worker Python."""
  with open(path, 'w') as f:
    f.write('#!/bin/sh\n'
            f'exec "{python}" -m pipeline.runners.flink_local.sdk_boot "$@"\n')
  os.chmod(path, 0o755)
  return path


def serve(address: str, worker_python: str, folder: str) -> None:
  """Runs the pool until the process is stopped."""
  os.makedirs(folder, exist_ok=True)
  problem = check_worker_python(worker_python)
  if problem:
    _LOGGER.error('%s; every worker start will fail with this message',
                  problem)
  servicer = CheckedWorkerPoolServicer(
      problem, use_process=True,
      container_executable=write_boot_script(
          os.path.join(folder, 'boot'), worker_python))
  server = grpc.server(thread_pool_executor.shared_unbounded_instance(),
                       options=[('grpc.http2.max_pings_without_data', 0),
                                ('grpc.http2.max_ping_strikes', 0)])
  try:
    bound = server.add_insecure_port(address)
  except RuntimeError:  # Newer grpcio raises; older ones return 0.
    bound = 0
  if not bound:
    raise SystemExit(f'worker pool: cannot listen on {address}')
  beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
      servicer, server)
  server.start()
  # Read by `featurize flink-local status`.
  with open(os.path.join(folder, 'health.json'), 'w') as f:
    json.dump({'address': address, 'worker_python': worker_python,
               'problem': problem}, f)
  _LOGGER.info('Worker pool listening on %s (workers: %s)', address,
               worker_python)
  try:
    while True:
      time.sleep(3600)
  finally:
    server.stop(0)


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(prog='worker_pool')
  parser.add_argument('--address', required=True, help='IP:PORT to bind.')
  parser.add_argument('--worker-python', default=sys.executable)
  parser.add_argument('--folder', required=True,
                      help='Where the boot script and health file go.')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO,
                      format='%(asctime)s %(levelname)s %(name)s: %(message)s')
  serve(args.address, args.worker_python, args.folder)


if __name__ == '__main__':
  main()
