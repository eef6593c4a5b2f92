"""Flink's standalone distribution, assembled from PyPI packages.

Flink's own release tarball is not served by the package registries, but
its two PyPI packages carry the same files: the ``apache-flink`` wheel has
``bin/`` and ``conf/`` (under ``pyflink/``), the ``apache-flink-libraries``
sdist has ``lib/``, ``opt/``, ``plugins/`` and ``bin/bash-java-utils.jar``
(under ``deps/``). Both are downloaded with ``pip download --no-deps`` into
a cache and never installed: they pin an old apache-beam.
"""
import contextlib
import glob
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from typing import Iterator

from pipeline.runners.flink_local.settings import ClusterSettings

# bin/ and conf/ are the same in every wheel of a release; one fixed wheel
# keeps the download the same from any Python or machine.
_WHEEL_PLATFORM = ('--only-binary=:all:', '--python-version=3.11',
                   '--implementation=cp', '--platform=manylinux2014_x86_64')


class SetupError(Exception):
  """Something the cluster needs could not be prepared."""


@contextlib.contextmanager
def assembled(final: str, prefix: str) -> Iterator[str]:
  """A staging folder beside ``final`` that becomes ``final`` when the
  block succeeds, and is deleted when it fails: a setup killed half way
  leaves nothing that looks finished."""
  parent = os.path.dirname(final)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=prefix, dir=parent)
  try:
    yield staging
    os.chmod(staging, 0o755)
    if os.path.isdir(final):  # An older one, found unfinished.
      shutil.rmtree(final)
    os.rename(staging, final)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


def is_ready(settings: ClusterSettings) -> bool:
  return os.path.isfile(_dist_jar(settings))


def _dist_jar(settings: ClusterSettings) -> str:
  return os.path.join(settings.flink_dir, 'lib',
                      f'flink-dist-{settings.flink_version}.jar')


def _pip_download(requirement: str, folder: str, *flags: str) -> str:
  """Downloads one package file (cached in ``folder``); returns its path."""
  name, version = requirement.split('==')
  # Wheels and newer sdists spell the name with underscores, older sdists
  # with hyphens.
  prefix = f"{name}_{version}".replace('-', '_')

  def find():
    for path in sorted(glob.glob(os.path.join(folder, '*'))):
      if os.path.basename(path).replace('-', '_').startswith(prefix):
        return path
    return None

  if find() is None:
    command = [sys.executable, '-m', 'pip', 'download', '--quiet',
               '--no-deps', '--dest', folder, *flags, requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
      raise SetupError(f'pip could not download {requirement}:\n'
                       f'{result.stderr.strip()[-2000:]}')
  path = find()
  if path is None:
    raise SetupError(f'pip downloaded {requirement} but no file matches it '
                     f'in {folder}')
  return path


def _extract_wheel_dirs(wheel: str, target: str) -> None:
  """``pyflink/bin`` and ``pyflink/conf`` of the wheel, to ``target``."""
  with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
      for part in ('bin', 'conf'):
        prefix = f'pyflink/{part}/'
        if info.filename.startswith(prefix) and not info.is_dir():
          dest = os.path.join(target, part, info.filename[len(prefix):])
          os.makedirs(os.path.dirname(dest), exist_ok=True)
          with z.open(info) as src, open(dest, 'wb') as out:
            shutil.copyfileobj(src, out)


def _extract_sdist_deps(sdist: str, version: str, target: str) -> None:
  """``deps/{lib,opt,plugins}`` and ``bash-java-utils.jar``, streamed."""
  root = f'apache-flink-libraries-{version}/deps/'
  wanted = ('lib/', 'opt/', 'plugins/', 'bin/bash-java-utils.jar')
  with tarfile.open(sdist, 'r:gz') as tar:
    for member in tar:
      if not member.name.startswith(root) or not member.isfile():
        continue
      relative = member.name[len(root):]
      if not relative.startswith(wanted):
        continue
      dest = os.path.join(target, relative)
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      src = tar.extractfile(member)
      assert src is not None  # None only for members that are not files
      with src, open(dest, 'wb') as out:
        shutil.copyfileobj(src, out)


def prepare(settings: ClusterSettings, log=print) -> str:
  """Assembles the distribution under ``settings.home`` once; reuses it.

  Returns:
    The distribution's folder (``FLINK_HOME``).
  """
  if is_ready(settings):
    return settings.flink_dir
  version = settings.flink_version
  downloads = os.path.join(settings.home, 'downloads')
  os.makedirs(downloads, exist_ok=True)
  log(f'flink-local: downloading Flink {version} from PyPI into {downloads}')
  wheel = _pip_download(f'apache-flink=={version}', downloads,
                        *_WHEEL_PLATFORM)
  sdist = _pip_download(f'apache-flink-libraries=={version}', downloads,
                        '--no-binary=:all:')
  with assembled(settings.flink_dir, '.flink-') as staging:
    _extract_wheel_dirs(wheel, staging)
    _extract_sdist_deps(sdist, version, staging)
    for path in glob.glob(os.path.join(staging, 'bin', '*')):
      os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP
               | stat.S_IXOTH)
    if not os.path.isfile(os.path.join(staging, 'lib',
                                       f'flink-dist-{version}.jar')):
      raise SetupError(f'{sdist} holds no flink-dist-{version}.jar')
  log(f'flink-local: Flink {version} assembled in {settings.flink_dir}')
  return settings.flink_dir
