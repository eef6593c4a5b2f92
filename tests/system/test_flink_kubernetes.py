"""The Flink-on-Kubernetes manifest, checked statically.

``deploy/flink-kubernetes/featurize-flink.yaml`` holds a FlinkDeployment (a
Flink session cluster of the Flink Kubernetes Operator, with a Beam worker
pool beside every TaskManager) and a Job that submits one featurize run
through Beam's Flink job server. Neither Kubernetes nor Docker can run
here, so these tests check what can be checked without them:

* the FlinkDeployment against the operator's own CRD schema (from its API
  jar on Maven Central), the Job against Kubernetes' schemas;
* images on the versions the project pins;
* host names, ports and parallelism agree with
  ``run_configs/flink-k8s.yaml``;
* the job that run config builds stages no file, which the TaskManagers
  could not read from the job server's pod;
* the worker-pool sidecar's memory.

Each check is a function that lists the problems it finds. ``BREAKS``
makes deliberate mistakes in copies of the files, each of which its check
must find, so that no check passes whatever the files say.
"""
import ast
import copy
import decimal
import os
import re
import subprocess
import zipfile
from typing import Callable, List, NamedTuple

import apache_beam as beam
import jsonschema
import kubernetes_validate
import pytest
import yaml
from apache_beam.options.pipeline_options import (FlinkRunnerOptions,
                                                  PipelineOptions)
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.portability.portable_runner import PortableRunner

from pipeline import build, options
from pipeline.runners.flink_local import settings
from tests.support.paths import ROOT


MANIFEST = os.path.join(ROOT, 'deploy', 'flink-kubernetes',
                        'featurize-flink.yaml')
RUN_CONFIG = os.path.join('run_configs', 'flink-k8s.yaml')
DATAFLOW_CONFIG = os.path.join('run_configs', 'dataflow.yaml')
# Where the Dockerfile installs featurize (WORKDIR) in the image.
IMAGE_HOME = '/opt/featurize'

# The Flink Kubernetes Operator's API jar holds the CRDs it installs.
OPERATOR_API = ('org.apache.flink', 'flink-kubernetes-operator-api', '1.10.0')
CRD_ENTRY = 'META-INF/fabric8/flinkdeployments.flink.apache.org-v1.yml'
# The oldest Kubernetes with native sidecars on by default (restartPolicy
# Always on an init container), and the newest kubernetes-validate ships.
K8S_VERSIONS = ('1.29.0', '1.37.0')
# Beam's boot program runs its worker pool on this port whatever the
# container declares (``--service_port=50000`` in sdks/python/container).
BEAM_WORKER_POOL_PORT = 50000
# The sidecar runs one VGG16 worker with two batches of 16 in flight in
# float32: 0.8 GB + 2 x 16 x 33 MB is ~1.9 GB (docs/PERFORMANCE.md).
MIN_WORKER_POOL_MEMORY = 2 * 2**30
WORKER_POOL = 'beam-worker-pool'
JOB_SERVER = 'beam-job-server'
SUBMITTER = 'featurize'


class Files(NamedTuple):
  """What the checks read, parsed; the breaks change copies of it.

  Attributes:
    deployment: The FlinkDeployment.
    job: The Job.
    run_config: ``run_configs/flink-k8s.yaml``.
  """
  deployment: dict
  job: dict
  run_config: dict


def _read_yaml(path: str):
  with open(os.path.join(ROOT, path)) as f:
    return yaml.safe_load(f)


def load_files() -> Files:
  with open(MANIFEST) as f:
    documents = [d for d in yaml.safe_load_all(f) if d]
  by_kind = {d['kind']: d for d in documents}
  assert sorted(by_kind) == ['FlinkDeployment', 'Job'] and len(documents) == 2
  return Files(by_kind['FlinkDeployment'], by_kind['Job'],
               _read_yaml(RUN_CONFIG))


# What the manifest is made of.
def worker_pool(files: Files) -> dict:
  spec = files.deployment['spec']['taskManager']['podTemplate']['spec']
  return next(c for c in spec['containers'] if c['name'] == WORKER_POOL)


def pod_spec(files: Files) -> dict:
  return files.job['spec']['template']['spec']


def job_container(files: Files, name: str) -> dict:
  spec = pod_spec(files)
  return next(c for c in spec.get('initContainers', []) + spec['containers']
              if c['name'] == name)


def flags(args: List[str]) -> dict:
  """``--name=value`` arguments as a mapping."""
  return dict(a.split('=', 1) for a in args if a.startswith('--') and '=' in a)


def container_ports(container: dict) -> List[int]:
  return [p['containerPort'] for p in container.get('ports', [])]


def image_tag(image: str) -> str:
  return image.rsplit(':', 1)[1] if ':' in image.rsplit('/', 1)[-1] else ''


_QUANTITY = re.compile(r'(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)'
                       r'(?:(?P<exponent>[eE][+-]?[0-9]+)'
                       r'|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)')
_SUFFIXES = {'Ki': 2**10, 'Mi': 2**20, 'Gi': 2**30, 'Ti': 2**40, 'Pi': 2**50,
             'Ei': 2**60, 'n': decimal.Decimal('1e-9'),
             'u': decimal.Decimal('1e-6'), 'm': decimal.Decimal('1e-3'),
             'k': 10**3, 'M': 10**6, 'G': 10**9, 'T': 10**12, 'P': 10**15,
             'E': 10**18}


def quantity(value) -> decimal.Decimal:
  """A Kubernetes resource quantity (``3Gi``, ``1536M``, ``500m``, ``2``)."""
  match = _QUANTITY.fullmatch(str(value))
  if not match:
    raise ValueError(f'not a Kubernetes quantity: {value!r}')
  number = decimal.Decimal(match['number'])
  if match['exponent']:
    return number * decimal.Decimal(10)**int(match['exponent'][1:])
  return number * _SUFFIXES.get(match['suffix'], 1)


# What the project pins.
def setup_py() -> dict:
  """setup.py's ``INSTALL_REQUIRES`` and ``version``, without running it."""
  with open(os.path.join(ROOT, 'setup.py')) as f:
    tree = ast.parse(f.read())
  found = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and any(
        getattr(t, 'id', None) == 'INSTALL_REQUIRES' for t in node.targets):
      found['install_requires'] = ast.literal_eval(node.value)
    if isinstance(node, ast.keyword) and node.arg == 'version':
      found['version'] = ast.literal_eval(node.value)
  return found


def beam_version() -> str:
  pins = [re.fullmatch(r'apache-beam(\[[^]]*\])?==(.+)', r)
          for r in setup_py()['install_requires']]
  return next(m[2] for m in pins if m)


def flink_minor() -> str:
  return '.'.join(settings.FLINK_VERSION.split('.')[:2])


# The checks: each returns the problems it finds.
def structural(schema: dict) -> dict:
  """A CRD's openAPIV3Schema as the API server applies it.

  The API server drops fields a structural schema does not name, and
  ``kubectl apply`` (strict field validation) refuses them: a misspelled
  field must fail here too. So an object schema that names its properties
  allows no others, unless it says to keep unknown fields. Kubernetes also
  adds apiVersion, kind and metadata to the root of every CRD.
  """
  schema = copy.deepcopy(schema)

  def close(node):
    if isinstance(node, dict):
      if ('properties' in node and 'additionalProperties' not in node
          and not node.get('x-kubernetes-preserve-unknown-fields')):
        node['additionalProperties'] = False
      for value in node.values():
        close(value)
    elif isinstance(node, list):
      for value in node:
        close(value)

  close(schema)
  schema['properties'].update(apiVersion={'type': 'string'},
                              kind={'type': 'string'},
                              metadata={'type': 'object'})
  return schema


def crd_problems(files: Files, crd: dict) -> List[str]:
  """The FlinkDeployment against the CRD's schema of its apiVersion."""
  group, version = files.deployment['apiVersion'].split('/')
  versions = {v['name']: v for v in crd['spec']['versions'] if v['served']}
  if (group, files.deployment['kind']) != (crd['spec']['group'],
                                           crd['spec']['names']['kind']):
    return [f'{files.deployment["apiVersion"]} {files.deployment["kind"]} '
            f'is not what the CRD defines']
  if version not in versions:
    return [f'the CRD serves no version {version}']
  validator = jsonschema.Draft202012Validator(
      structural(versions[version]['schema']['openAPIV3Schema']))
  return [f'{"/".join(map(str, e.absolute_path))}: {e.message}'
          for e in validator.iter_errors(files.deployment)]


def kubernetes_problems(files: Files, version: str) -> List[str]:
  """The Job, and the TaskManager pod template as a Pod, in strict mode."""
  template = files.deployment['spec']['taskManager']['podTemplate']
  problems = []
  for resource in (files.job, template):
    try:
      kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.ValidationError as e:
      problems.append(f'{resource["kind"]}: '
                      f'{"/".join(map(str, e.path))}: {e.message}')
  return problems


def image_problems(files: Files) -> List[str]:
  """Flink, Beam's job server and featurize's image on the pinned versions."""
  problems = []
  spec = files.deployment['spec']
  flink = spec['image']
  tag = image_tag(flink)
  if not (flink.startswith('flink:') and
          (tag == settings.FLINK_VERSION or
           tag.startswith(settings.FLINK_VERSION + '-'))):
    problems.append(f'Flink image {flink} is not Flink '
                    f'{settings.FLINK_VERSION}')
  if spec['flinkVersion'] != 'v' + flink_minor().replace('.', '_'):
    problems.append(f'flinkVersion {spec["flinkVersion"]} is not '
                    f'{flink_minor()}')
  job_server = job_container(files, JOB_SERVER)['image']
  expected = f'apache/beam_flink{flink_minor()}_job_server:{beam_version()}'
  if job_server != expected:
    problems.append(f'job server image {job_server}, expected {expected}')
  # The Python SDK's list of Flink versions Beam publishes a job server for.
  if flink_minor() not in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS:
    problems.append(f'Beam {beam.__version__} has no Flink {flink_minor()} '
                    'job server')
  featurize = _read_yaml(DATAFLOW_CONFIG)['sdk_container_image']
  version = setup_py()['version']
  if image_tag(featurize) != version:
    problems.append(f'{DATAFLOW_CONFIG} image {featurize} is not version '
                    f'{version}')
  for name, image in ((WORKER_POOL, worker_pool(files)['image']),
                      (SUBMITTER, job_container(files, SUBMITTER)['image'])):
    if image != featurize:
      problems.append(f'{name} runs {image}, not {featurize}')
  return problems


def wiring_problems(files: Files) -> List[str]:
  """Host names, ports, parallelism and the pod layout."""
  problems = []
  config = files.run_config
  spec = files.deployment['spec']
  flink_conf = spec['flinkConfiguration']

  job_server = job_container(files, JOB_SERVER)
  server_flags = flags(job_server.get('args', []))
  job_port = int(server_flags.get('--job-port', 0))
  if job_port not in container_ports(job_server):
    problems.append(f'job server --job-port {job_port} is not a containerPort')
  for flag in ('--artifact-port', '--expansion-port'):
    if int(server_flags.get(flag, 0)) not in container_ports(job_server):
      problems.append(f'job server {flag} is not a containerPort')
  if config.get('job_endpoint') != f'localhost:{job_port}':
    problems.append(f'job_endpoint {config.get("job_endpoint")} is not the '
                    f'job server at localhost:{job_port}')
  # The operator's REST Service of a FlinkDeployment is NAME-rest.
  master = (f'{files.deployment["metadata"]["name"]}-rest:'
            f'{flink_conf["rest.port"]}')
  if server_flags.get('--flink-master') != master:
    problems.append(f'--flink-master {server_flags.get("--flink-master")}, '
                    f'expected the REST service {master}')
  # The job server listens on localhost: it must be a sidecar of the
  # submitter's pod, alive while the submitter runs.
  if job_server not in pod_spec(files).get('initContainers', []) or (
      job_server.get('restartPolicy') != 'Always'):
    problems.append('the job server is not a native sidecar of the '
                    'submitting pod')

  pool = worker_pool(files)
  if config.get('environment_type') != 'EXTERNAL':
    problems.append(f'environment_type {config.get("environment_type")}')
  if container_ports(pool) != [BEAM_WORKER_POOL_PORT]:
    problems.append(f'worker pool ports {container_ports(pool)}, Beam\'s boot '
                    f'listens on {BEAM_WORKER_POOL_PORT}')
  if config.get('environment_config') != f'localhost:{BEAM_WORKER_POOL_PORT}':
    problems.append(f'environment_config {config.get("environment_config")} '
                    'is not the sidecar worker pool')
  if pool.get('args') != ['--worker_pool'] or 'command' in pool:
    problems.append('the worker pool sidecar does not run Beam\'s boot '
                    'with --worker_pool')

  slots = int(flink_conf['taskmanager.numberOfTaskSlots'])
  replicas = spec['taskManager']['replicas']
  if config.get('parallelism') != replicas * slots:
    problems.append(f'parallelism {config.get("parallelism")} is not '
                    f'{replicas} TaskManagers x {slots} slots')

  command = job_container(files, SUBMITTER)['command']
  in_image = f'{IMAGE_HOME}/{RUN_CONFIG}'
  if command[:2] != ['featurize', 'run'] or ['--config', in_image] not in [
      command[i:i + 2] for i in range(len(command))]:
    problems.append(f'the submitter does not run featurize run --config '
                    f'{in_image}')
  if not os.path.isfile(os.path.join(ROOT, RUN_CONFIG)):
    problems.append(f'{RUN_CONFIG} does not exist')
  if (pod_spec(files).get('restartPolicy') != 'Never' or
      files.job['spec'].get('backoffLimit') != 0):
    problems.append('Kubernetes would retry a run that Flink already retries')
  return problems


def image_build_problems(root: str = ROOT) -> List[str]:
  """The Dockerfile puts ``run_configs/`` at ``IMAGE_HOME/run_configs``."""
  with open(os.path.join(root, 'Dockerfile')) as f:
    dockerfile = f.read()
  with open(os.path.join(root, '.dockerignore')) as f:
    ignore = f.read().split()
  problems = []
  if not re.search(rf'^WORKDIR\s+{IMAGE_HOME}\s*$', dockerfile, re.M):
    problems.append(f'the Dockerfile does not work in {IMAGE_HOME}')
  if not re.search(r'^COPY\s+run_configs/?\s+run_configs/?\s*$', dockerfile,
                   re.M):
    problems.append('the Dockerfile does not copy run_configs/')
  if '!run_configs/' not in ignore:
    problems.append('.dockerignore keeps run_configs/ out of the image')
  return problems


def memory_problems(files: Files) -> List[str]:
  """The worker pool's memory request and limit, parsed."""
  resources = worker_pool(files).get('resources', {})
  request = quantity(resources.get('requests', {}).get('memory', 0))
  limit = quantity(resources.get('limits', {}).get('memory', 0))
  problems = []
  if limit < request:
    problems.append(f'worker pool memory limit {limit} < request {request}')
  if min(request, limit) < MIN_WORKER_POOL_MEMORY:
    problems.append(f'worker pool memory {request}/{limit} bytes is below '
                    f'{MIN_WORKER_POOL_MEMORY}')
  return problems


def staging_problems(files: Files, tmp_path) -> List[str]:
  """The job as PortableRunner submits it, built from the run config.

  Every environment must be the sidecar pool and stage no artifact: the
  job server keeps staged files in its own pod, where the TaskManagers,
  which serve them to their workers, cannot read them.
  """
  config = tmp_path / 'run-config.yaml'
  config.write_text(yaml.safe_dump(files.run_config))
  parsed = options.parse_run_args(['--config', str(config), '--input',
                                   str(tmp_path / '*.tar'), '--output',
                                   str(tmp_path / 'out'), '--weights',
                                   'random'])
  pipeline_options = PipelineOptions(parsed.beam_args)
  pipeline = beam.Pipeline(options=pipeline_options)
  build.build_pipeline(pipeline, parsed.job)
  proto = PortableRunner.get_proto_pipeline(pipeline, pipeline_options)
  problems = []
  for name, env in proto.components.environments.items():
    if env.urn != common_urns.environments.EXTERNAL.urn:
      problems.append(f'{name} is {env.urn}')
      continue
    url = beam_runner_api_pb2.ExternalPayload.FromString(
        env.payload).endpoint.url
    if url != files.run_config.get('environment_config'):
      problems.append(f'{name} asks {url} for workers')
    for artifact in env.dependencies:
      role = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
          artifact.role_payload)
      problems.append(f'{name} stages {role.staged_name}')
  return problems


# The tests.
@pytest.fixture(scope='session')
def flink_deployment_crd() -> dict:
  """The FlinkDeployment CRD of the operator's API jar (Maven caches it)."""
  group, artifact, version = OPERATOR_API
  repository = os.path.join(os.path.expanduser('~'), '.m2', 'repository')
  jar = os.path.join(repository, *group.split('.'), artifact, version,
                     f'{artifact}-{version}.jar')
  if not os.path.isfile(jar):
    # Named explicitly: Java finds the home folder without $HOME.
    result = subprocess.run(
        ['mvn', '-B', '-q', 'dependency:get',
         f'-Dmaven.repo.local={repository}',
         f'-Dartifact={group}:{artifact}:{version}', '-Dtransitive=false'],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
  with zipfile.ZipFile(jar) as z:
    return yaml.safe_load(z.read(CRD_ENTRY))


@pytest.fixture
def files() -> Files:
  return load_files()


def test_quantity():
  assert quantity('3Gi') == 3 * 2**30
  assert quantity('1536Mi') == quantity('1.5Gi')
  assert quantity('2G') == 2 * 10**9
  assert quantity('500m') == decimal.Decimal('0.5')
  assert quantity('1e3') == quantity('1k') == quantity(1000)
  assert quantity('1E') == 10**18
  with pytest.raises(ValueError):
    quantity('3 GiB')


def test_flink_deployment_matches_the_operator_crd(files, flink_deployment_crd):
  assert crd_problems(files, flink_deployment_crd) == []


@pytest.mark.parametrize('version', K8S_VERSIONS)
def test_job_and_pod_template_match_kubernetes_schemas(files, version):
  assert kubernetes_problems(files, version) == []


def test_images_are_the_pinned_versions(files):
  assert image_problems(files) == []


def test_ports_and_parallelism_agree_with_the_run_config(files):
  assert wiring_problems(files) == []


def test_the_image_holds_the_run_config():
  assert image_build_problems() == []


def test_worker_pool_memory(files):
  assert memory_problems(files) == []


def test_the_job_stages_nothing_the_taskmanagers_cannot_read(files, tmp_path):
  assert staging_problems(files, tmp_path) == []


# One deliberate mistake per check, on a copy.
_DELETE = object()


def _set(path: str, value) -> Callable[[Files], None]:
  """Sets (or, with ``_DELETE``, removes) ``document:key/key/index/...``."""
  document, keys = path.split(':')

  def mutate(files: Files):
    node = getattr(files, document)
    *parents, last = [int(k) if k.isdigit() else k for k in keys.split('/')]
    for key in parents:
      node = node[key]
    if value is _DELETE:
      del node[last]
    else:
      node[last] = value

  return mutate


def _job_server_as_plain_container(files: Files):
  spec = pod_spec(files)
  spec['containers'].append(spec.pop('initContainers')[0])


_TM = 'deployment:spec/taskManager'
_POOL = _TM + '/podTemplate/spec/containers/0'
_POD = 'job:spec/template/spec'
_JOB_SERVER = _POD + '/initContainers/0'
_SUBMITTER = _POD + '/containers/0'

CHECKS = {
    'crd': lambda files, tmp_path, crd: crd_problems(files, crd),
    'kubernetes': lambda files, tmp_path, crd: kubernetes_problems(
        files, K8S_VERSIONS[0]),
    'images': lambda files, tmp_path, crd: image_problems(files),
    'wiring': lambda files, tmp_path, crd: wiring_problems(files),
    'memory': lambda files, tmp_path, crd: memory_problems(files),
    'staging': lambda files, tmp_path, crd: staging_problems(files, tmp_path),
}

BREAKS = {
    'replicas as a string': ('crd', _set(_TM + '/replicas', 'two')),
    'a misspelled field': ('crd', _set(_TM + '/replica', 2)),
    'a number in flinkConfiguration': (
        'crd', _set('deployment:spec/flinkConfiguration/rest.port', 8081)),
    'an unknown flinkVersion': ('crd', _set('deployment:spec/flinkVersion',
                                            'v1_99')),
    'backoffLimit as a string': ('kubernetes',
                                 _set('job:spec/backoffLimit', 'zero')),
    'a misspelled Job field': ('kubernetes',
                               _set(_POD + '/restartPolicyy', 'Never')),
    'a port as a string in the pod template': (
        'kubernetes', _set(_POOL + '/ports/0/containerPort', 'fifty')),
    'another Flink': ('images', _set('deployment:spec/image',
                                     'flink:1.18.1-scala_2.12-java17')),
    'flinkVersion v1_18': ('images', _set('deployment:spec/flinkVersion',
                                          'v1_18')),
    'an older job server': ('images', _set(
        _JOB_SERVER + '/image', 'apache/beam_flink1.19_job_server:2.62.0')),
    'another worker image': ('images', _set(
        _POOL + '/image', 'apache/beam_python3.11_sdk:2.77.0')),
    'another submitter image': ('images', _set(
        _SUBMITTER + '/image',
        'us-central1-docker.pkg.dev/my-project/featurize/featurize:0.0.9')),
    'job endpoint on another port': ('wiring', _set(
        'run_config:job_endpoint', 'localhost:8090')),
    'job server on another host': ('wiring', _set(
        'run_config:job_endpoint', 'featurize-job-server:8099')),
    'pool on another port': ('wiring', _set('run_config:environment_config',
                                            'localhost:50001')),
    'pool container port': ('wiring', _set(_POOL + '/ports/0/containerPort',
                                           50001)),
    'pool without --worker_pool': ('wiring', _set(_POOL + '/args', [])),
    'DOCKER environment': ('wiring', _set('run_config:environment_type',
                                          'DOCKER')),
    'flink master without -rest': ('wiring', _set(
        _JOB_SERVER + '/args/0', '--flink-master=featurize-flink:8081')),
    'three TaskManagers': ('wiring', _set(_TM + '/replicas', 3)),
    'another config path': ('wiring', _set(_SUBMITTER + '/command/3',
                                           'run_configs/flink-k8s.yaml')),
    'job server as a plain container': ('wiring',
                                        _job_server_as_plain_container),
    'Kubernetes retries': ('wiring', _set('job:spec/backoffLimit', 2)),
    'limit below request': ('memory', _set(
        _POOL + '/resources/limits/memory', '1Gi')),
    'request below 2Gi': ('memory', _set(
        _POOL + '/resources/requests/memory', '1536Mi')),
    'no memory request': ('memory', _set(
        _POOL + '/resources/requests/memory', _DELETE)),
    'submission environment staged': ('staging', _set(
        'run_config:experiments', _DELETE)),
}


@pytest.mark.parametrize('line', ['COPY run_configs run_configs',
                                  '!run_configs/', 'WORKDIR /opt/featurize'])
def test_image_check_finds_a_break(line, tmp_path):
  removed = 0
  for name in ('Dockerfile', '.dockerignore'):
    with open(os.path.join(ROOT, name)) as f:
      text = f.read()
    removed += line in text
    (tmp_path / name).write_text(text.replace(line, '', 1))
  assert removed == 1
  assert image_build_problems(str(tmp_path)) != []


@pytest.mark.parametrize('name', sorted(BREAKS))
def test_each_check_finds_a_break(name, files, tmp_path,
                                  flink_deployment_crd):
  check, mutate = CHECKS[BREAKS[name][0]], BREAKS[name][1]
  assert check(files, tmp_path, flink_deployment_crd) == []
  broken = copy.deepcopy(files)
  mutate(broken)
  assert check(broken, tmp_path, flink_deployment_crd) != []
