"""The program each Python SDK worker of a local worker pool starts with.

Beam's worker pool starts a worker either as ``python -c SdkHarness(...)``,
which gets neither the job's pipeline options nor a log channel to the
runner, or through a "container executable" that follows Beam's container
contract (flags ``--id``, ``--provision_endpoint``, ...). In Beam's Docker
images that executable is a Go program (``/opt/apache/beam/boot``), not on
PyPI; this is the part of it a local worker needs, in Python: ask the
runner's provision service for the job's options and endpoints, then run
Beam's own ``sdk_worker_main`` with them. Worker logs then reach the
TaskManager's log, as they do on a cluster of Beam's images.

Staged artifacts are not installed: the pool's environment already holds
featurize and its dependencies.
"""
import argparse
import os
import sys
from typing import Dict, Mapping, Sequence

import grpc
from google.protobuf import json_format, text_format

from apache_beam.portability.api import (beam_provision_api_pb2,
                                         beam_provision_api_pb2_grpc,
                                         endpoints_pb2)

PROVISION_TIMEOUT_S = 60


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='sdk_boot')
  for flag in ('id', 'logging_endpoint', 'artifact_endpoint',
               'provision_endpoint', 'control_endpoint'):
    parser.add_argument(f'--{flag}', required=flag in ('id',
                                                       'provision_endpoint'))
  args, _ = parser.parse_known_args(argv)
  return args


def provision_info(endpoint: str,
                   worker_id: str) -> beam_provision_api_pb2.ProvisionInfo:
  """The job's options and endpoints, from the runner's provision service."""
  with grpc.insecure_channel(endpoint) as channel:
    stub = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
    return stub.GetProvisionInfo(
        beam_provision_api_pb2.GetProvisionInfoRequest(),
        metadata=[('worker_id', worker_id)],
        timeout=PROVISION_TIMEOUT_S).info


def _descriptor(endpoint: endpoints_pb2.ApiServiceDescriptor,
                fallback_url: str) -> str:
  if not endpoint.url:
    endpoint = endpoints_pb2.ApiServiceDescriptor(url=fallback_url)
  return text_format.MessageToString(endpoint)


def worker_environment(args: argparse.Namespace,
                       info: beam_provision_api_pb2.ProvisionInfo,
                       base: Mapping[str, str]) -> Dict[str, str]:
  """The variables ``sdk_worker_main`` reads, as Beam's boot sets them."""
  env = dict(base)
  env['WORKER_ID'] = args.id
  env['PIPELINE_OPTIONS'] = json_format.MessageToJson(info.pipeline_options)
  env['LOGGING_API_SERVICE_DESCRIPTOR'] = _descriptor(
      info.logging_endpoint, args.logging_endpoint)
  env['CONTROL_API_SERVICE_DESCRIPTOR'] = _descriptor(
      info.control_endpoint, args.control_endpoint)
  if info.HasField('status_endpoint') and info.status_endpoint.url:
    env['STATUS_API_SERVICE_DESCRIPTOR'] = text_format.MessageToString(
        info.status_endpoint)
  env['RUNNER_CAPABILITIES'] = ' '.join(info.runner_capabilities)
  return env


def main(argv: Sequence[str]) -> None:
  args = parse_args(argv)
  env = worker_environment(args, provision_info(args.provision_endpoint,
                                                args.id), os.environ)
  # The pool pipes a worker's stdout and never reads it: a worker that
  # printed 64 KB would block. Its stderr goes to the pool's log.
  os.dup2(2, 1)
  os.execve(sys.executable, [
      sys.executable, '-m', 'apache_beam.runners.worker.sdk_worker_main'
  ], env)


if __name__ == '__main__':
  main(sys.argv[1:])
