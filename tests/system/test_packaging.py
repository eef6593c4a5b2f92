"""What Dataflow does with ``--setup_file``: build an sdist, install it into
a clean environment, run the code from there.

The sdist is built as Beam's stager builds it (``setup.py sdist``), and
installed with its pinned dependencies into a new virtual environment; the
job then runs from a folder outside the checkout, so nothing can come from
the source tree.
"""
import glob
import json
import os
import pkgutil
import subprocess
import sys
import venv

import pytest
from tests.support.paths import ROOT




def _modules() -> list:
  """Every module of the project's packages and their subpackages, from
  the source tree (``pkgutil.walk_packages``, which imports nothing but
  the packages' ``__init__``)."""
  names = []
  for package in ('pipeline', 'transforms'):
    names.append(package)
    names += [info.name for info in pkgutil.walk_packages(
        [os.path.join(ROOT, package)], prefix=f'{package}.')]
  return sorted(names)


def test_the_module_list_holds_every_subpackage():
  """What the sdist test imports reaches the stages' subpackages."""
  modules = _modules()
  for name in ('transforms.read.image_shards', 'transforms.extract.gpu.routing',
               'transforms.write.publish_run', 'pipeline.refresh.plan',
               'pipeline.runners.flink_local.cluster'):
    assert name in modules
  on_disk = glob.glob(os.path.join(ROOT, 'transforms', '**', '*.py'),
                      recursive=True)
  assert len([m for m in modules if m.startswith('transforms')]) == len(
      on_disk)


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  root = tmp_path_factory.mktemp('sdist')
  subprocess.run([sys.executable, 'setup.py', '-q', 'sdist', '--dist-dir',
                  str(root / 'dist')], cwd=ROOT, check=True,
                 capture_output=True)
  sdist, = glob.glob(str(root / 'dist' / 'featurize-*.tar.gz'))
  env_dir = root / 'venv'
  venv.create(env_dir, with_pip=True)
  python = str(env_dir / 'bin' / 'python')
  subprocess.run([python, '-m', 'pip', 'install', '-q', sdist], check=True,
                 capture_output=True)
  work = root / 'elsewhere'
  work.mkdir()
  return env_dir, python, str(work)


def test_every_module_imports_from_the_installed_sdist(installed):
  env_dir, python, work = installed
  script = ('import importlib, json, sys\n'
            'print(json.dumps({m: importlib.import_module(m).__file__ '
            'for m in sys.argv[1:]}))\n')
  result = subprocess.run([python, '-c', script, *_modules()], cwd=work,
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]
  files = json.loads(result.stdout.strip().splitlines()[-1])
  assert set(files) == set(_modules())
  outside = {m: f for m, f in files.items()
             if not f.startswith(str(env_dir) + os.sep)}
  assert not outside


def test_installed_copy_runs_the_demo_job(installed):
  env_dir, _, work = installed
  result = subprocess.run(
      [str(env_dir / 'bin' / 'featurize'), 'demo', '--output', 'out'],
      cwd=work, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]
  assert ' 0 errors' in result.stdout
  with open(os.path.join(work, 'out', 'manifest.json')) as f:
    manifest = json.load(f)
  assert manifest['counts']['features'] == manifest['counts']['images_in'] > 0
