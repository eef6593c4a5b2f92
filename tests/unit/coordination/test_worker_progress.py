"""Workers' running totals in ``<pid>.json`` files, and the launcher's sum
of them: in this process and in real worker processes."""
import collections
import json
import os
import subprocess
import sys
import textwrap

from tests.support.paths import ROOT
from transforms.coordination import worker_progress


def _file_of(folder, pid: int) -> dict:
  with open(os.path.join(str(folder), f'{pid}.json')) as f:
    return json.load(f)


def _worker(folder, script: str) -> tuple:
  """Runs ``script`` in a worker process that inherits the folder as the
  launcher sets it; returns its pid and what it printed."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  env[worker_progress.ENV] = str(folder)
  code = ('import os\n'
          'from transforms.coordination import worker_progress as w\n')
  process = subprocess.Popen(
      [sys.executable, '-c', code + textwrap.dedent(script)], cwd=ROOT,
      env=env, stdout=subprocess.PIPE, text=True)
  out, _ = process.communicate(timeout=30)
  assert process.returncode == 0
  return process.pid, out


def test_a_worker_writes_its_totals_under_its_pid(tmp_path, monkeypatch):
  monkeypatch.setenv(worker_progress.ENV, str(tmp_path))
  worker_progress.add(worker_progress.IMAGES, 3)
  worker_progress.add(worker_progress.ERRORS)
  worker_progress.add(worker_progress.SHARDS)
  worker_progress.flush()
  assert os.listdir(tmp_path) == [f'{os.getpid()}.json']  # no .tmp left
  assert _file_of(tmp_path, os.getpid()) == {'images': 3, 'errors': 1,
                                             'shards': 1}
  assert worker_progress.read_totals(str(tmp_path)) == collections.Counter(
      images=3, errors=1, shards=1)


def test_a_new_folder_is_a_new_job_and_no_folder_counts_nothing(
    tmp_path, monkeypatch):
  first, second = tmp_path / 'first', tmp_path / 'second'
  first.mkdir()
  second.mkdir()
  monkeypatch.setenv(worker_progress.ENV, str(first))
  worker_progress.add(worker_progress.IMAGES, 5)
  worker_progress.flush()
  monkeypatch.delenv(worker_progress.ENV)
  worker_progress.add(worker_progress.IMAGES, 100)  # Dataflow: not counted
  worker_progress.flush()
  assert _file_of(first, os.getpid()) == {'images': 5}
  monkeypatch.setenv(worker_progress.ENV, str(second))
  worker_progress.flush()  # nothing counted for this job yet: no file
  assert os.listdir(second) == []
  worker_progress.add(worker_progress.SHARDS)
  worker_progress.flush()
  assert _file_of(second, os.getpid()) == {'shards': 1}
  assert _file_of(first, os.getpid()) == {'images': 5}


def test_the_launcher_sums_every_workers_file(tmp_path):
  one, out = _worker(tmp_path, """
      w._INTERVAL_S = 60  # only the first add writes before the flush
      w.add(w.IMAGES, 2)
      w.add(w.IMAGES, 2)
      w.add(w.SHARDS)
      print(open(f'{os.environ[w.ENV]}/{os.getpid()}.json').read())
      w.flush()
      """)
  assert json.loads(out) == {'images': 2}  # a write at most per interval
  assert _file_of(tmp_path, one) == {'images': 4, 'shards': 1}
  two, _ = _worker(tmp_path, """
      w.add(w.IMAGES, 3)  # a fresh process writes at its first add
      """)
  assert _file_of(tmp_path, two) == {'images': 3}
  three, _ = _worker(tmp_path, """
      w.add(w.ERRORS)
      w.add(w.IMAGES)
      w.flush()
      """)
  assert len({one, two, three}) == 3
  # Half-written, foreign and corrupt files are no worker's totals.
  (tmp_path / '99.json.tmp').write_text('{"images": 1000}')
  (tmp_path / 'notes.txt').write_text('{"images": 1000}')
  (tmp_path / 'bad.json').write_text('{"images": 10')
  assert worker_progress.read_totals(str(tmp_path)) == collections.Counter(
      images=8, shards=1, errors=1)
