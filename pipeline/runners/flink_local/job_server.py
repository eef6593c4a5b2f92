"""Beam's Flink job server, assembled with Maven.

The ready-made ``beam-runners-flink-1.19-job-server`` jar is not served by
every Maven mirror, but ``org.apache.beam:beam-runners-flink-1.19`` and its
whole dependency closure are, and that classpath runs
``org.apache.beam.runners.flink.FlinkJobServerDriver``. Maven copies the
closure into ``lib/``; a launcher jar holding only a manifest (Main-Class
and Class-Path) makes it one ``java -jar`` like the official jar.

Where the official jar of your Beam version can be had, give it instead
(``featurize flink-local setup --job-server-jar PATH``).
"""
import os
import shutil
import subprocess
import zipfile
from typing import List

from pipeline.runners.flink_local.distribution import SetupError, assembled
from pipeline.runners.flink_local.settings import ClusterSettings

MAIN_CLASS = 'org.apache.beam.runners.flink.FlinkJobServerDriver'
FLINK_RUNNER_ARTIFACT = 'beam-runners-flink-1.19'
# The job server logs through SLF4J; without a binding it says nothing.
SLF4J_SIMPLE_VERSION = '1.7.30'

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>featurize.local</groupId>
  <artifactId>beam-flink-job-server</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.beam</groupId>
      <artifactId>{runner}</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>{slf4j}</version>
    </dependency>
  </dependencies>
</project>
"""


def is_ready(settings: ClusterSettings) -> bool:
  return os.path.isfile(settings.job_server_launcher)


def manifest(main_class: str, class_path: List[str]) -> bytes:
  """A jar manifest: lines of at most 72 bytes, continued with a space."""

  def wrap(line: str) -> bytes:
    data = line.encode()
    out = [data[:72]]
    data = data[72:]
    while data:
      out.append(b' ' + data[:71])
      data = data[71:]
    return b'\r\n'.join(out) + b'\r\n'

  return (wrap('Manifest-Version: 1.0') + wrap(f'Main-Class: {main_class}')
          + wrap('Class-Path: ' + ' '.join(class_path)) + b'\r\n')


def prepare(settings: ClusterSettings, log=print) -> str:
  """Builds the job server once (or checks the given jar); returns it."""
  if settings.job_server_jar:
    if not os.path.isfile(settings.job_server_jar):
      raise SetupError(f'--job-server-jar {settings.job_server_jar} does '
                       'not exist')
    return settings.job_server_jar
  if is_ready(settings):
    return settings.job_server_launcher
  if shutil.which('mvn') is None:
    raise SetupError('Maven (mvn) is needed to assemble the Beam job '
                     'server: apt-get install maven')
  version = settings.job_server_version
  log(f'flink-local: assembling Beam {version} Flink job server with Maven '
      f'into {settings.job_server_dir}')
  with assembled(settings.job_server_dir, '.job-server-') as staging:
    with open(os.path.join(staging, 'pom.xml'), 'w') as f:
      f.write(_POM.format(version=version, runner=FLINK_RUNNER_ARTIFACT,
                          slf4j=SLF4J_SIMPLE_VERSION))
    result = subprocess.run(
        ['mvn', '-B', '-q', 'dependency:copy-dependencies',
         '-DoutputDirectory=lib', '-DincludeScope=runtime'],
        cwd=staging, capture_output=True, text=True)
    if result.returncode != 0:
      raise SetupError('Maven could not resolve '
                       f'org.apache.beam:{FLINK_RUNNER_ARTIFACT}:{version}:\n'
                       f'{(result.stdout + result.stderr).strip()[-3000:]}')
    jars = sorted(j for j in os.listdir(os.path.join(staging, 'lib'))
                  if j.endswith('.jar'))
    with zipfile.ZipFile(os.path.join(staging, 'job-server.jar'), 'w') as z:
      z.writestr('META-INF/MANIFEST.MF',
                 manifest(MAIN_CLASS, [f'lib/{j}' for j in jars]))
  log(f'flink-local: job server ready ({len(jars)} jars)')
  return settings.job_server_launcher
