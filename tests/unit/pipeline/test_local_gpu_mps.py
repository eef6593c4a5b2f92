"""NVIDIA MPS for local GPU runs with several worker processes
(``pipeline/runners/local_gpu/mps.py``).

The decision is a pure function, tested here case by case. NVIDIA's
control program is replaced by a recording stand-in on the PATH: this
machine has no GPU, and what is tested is how featurize drives the
program (start, the workers' environment, quit, clean-up). MPS itself is
measured on a GPU (benchmarks/results/gpu/RESULTS.md, run 16).
"""
import os

import pytest

from tests.support.fake_mps import calls, fake_control, put_first_on_path
from pipeline.runners.local_gpu import mps

# Stand-ins for shutil.which and os.path.exists, named as the cases.
MISSING = lambda program: None  # noqa: E731
FOUND = lambda program: f'/usr/bin/{program}'  # noqa: E731
NOTHING = lambda path: False  # noqa: E731


def test_one_process_needs_no_mps_and_says_nothing():
  assert mps.plan(1, {}, FOUND, NOTHING) == mps.Plan(False, '')


def test_several_processes_start_a_daemon_where_the_program_is():
  decided = mps.plan(8, {}, FOUND, NOTHING)
  assert decided.start
  assert '8 worker processes' in decided.line and 'MPS' in decided.line


def test_off_turns_it_off_and_says_so():
  decided = mps.plan(8, {mps.MPS_ENV: 'off'}, FOUND, NOTHING)
  assert not decided.start and 'off' in decided.line


def test_a_daemon_already_named_or_listening_is_used_not_started():
  named = mps.plan(4, {mps.PIPE_ENV: '/srv/mps'}, FOUND, NOTHING)
  assert not named.start and '/srv/mps' in named.line
  listening = mps.plan(
      4, {}, FOUND, lambda p: p == os.path.join(mps.DEFAULT_PIPE, 'control'))
  assert not listening.start and mps.DEFAULT_PIPE in listening.line


def test_without_the_program_the_run_goes_on_and_says_why():
  decided = mps.plan(4, {}, MISSING, NOTHING)
  assert not decided.start and mps.CONTROL in decided.line


def test_an_unknown_choice_is_refused():
  with pytest.raises(ValueError, match=mps.MPS_ENV):
    mps.plan(4, {mps.MPS_ENV: 'on'}, FOUND, NOTHING)


def test_eight_processes_get_half_the_gpu_each_unless_the_user_chose():
  own = mps.plan(8, {}, FOUND, NOTHING)
  assert own.share == str(mps.SHARE) and mps.SHARE_ENV in own.line
  theirs = mps.plan(8, {mps.PIPE_ENV: '/srv/mps'}, FOUND, NOTHING)
  assert theirs.share == str(mps.SHARE) and mps.SHARE_ENV in theirs.line
  assert mps.plan(mps.SHARE_FROM - 1, {}, FOUND, NOTHING).share == ''
  chosen = mps.plan(8, {mps.SHARE_ENV: '70'}, FOUND, NOTHING)
  assert chosen.start and chosen.share == ''
  assert mps.SHARE_ENV not in chosen.line
  # Without MPS the variable means nothing: none is set.
  assert mps.plan(8, {mps.MPS_ENV: 'off'}, FOUND, NOTHING).share == ''
  assert mps.plan(8, {}, MISSING, NOTHING).share == ''


@pytest.fixture
def clean_environ(monkeypatch, tmp_path):
  for name in (mps.MPS_ENV, mps.PIPE_ENV, mps.SHARE_ENV):
    monkeypatch.delenv(name, raising=False)
  # A machine-wide daemon on this machine would change the plan.
  monkeypatch.setattr(mps, 'DEFAULT_PIPE', str(tmp_path / 'no-daemon'))
  return monkeypatch


def test_sharing_starts_points_the_workers_at_and_quits_its_daemon(
    clean_environ, tmp_path):
  put_first_on_path(clean_environ, fake_control(tmp_path))
  said = []
  with mps.sharing(2, said.append):
    inside = os.environ.get(mps.PIPE_ENV)
    started = calls(tmp_path)
  assert [c['args'] for c in started] == [['-d']]
  assert started[0]['pipe'] == inside and started[0]['pipe_exists']
  ended = calls(tmp_path)
  assert [c['args'] for c in ended] == [['-d'], []]
  assert ended[1]['read'].strip() == 'quit' and ended[1]['pipe'] == inside
  assert mps.PIPE_ENV not in os.environ
  assert not os.path.exists(os.path.dirname(inside))  # its folder is gone
  assert said == [mps.plan(2, {}, mps.shutil.which, lambda p: False).line]


def test_sharing_gives_eight_workers_their_share_for_the_run_only(
    clean_environ, tmp_path):
  put_first_on_path(clean_environ, fake_control(tmp_path))
  with mps.sharing(8):
    assert os.environ[mps.SHARE_ENV] == str(mps.SHARE)
  assert mps.SHARE_ENV not in os.environ
  clean_environ.setenv(mps.SHARE_ENV, '70')  # the user's own choice stays
  with mps.sharing(8):
    assert os.environ[mps.SHARE_ENV] == '70'
  assert os.environ[mps.SHARE_ENV] == '70'


def test_sharing_quits_its_daemon_when_the_run_fails(clean_environ, tmp_path):
  put_first_on_path(clean_environ, fake_control(tmp_path))
  with pytest.raises(RuntimeError):
    with mps.sharing(2):
      raise RuntimeError('the job failed')
  assert [c['args'] for c in calls(tmp_path)] == [['-d'], []]
  assert mps.PIPE_ENV not in os.environ


def test_a_daemon_that_does_not_start_leaves_the_run_without_mps(
    clean_environ, tmp_path):
  put_first_on_path(clean_environ, fake_control(tmp_path, exit_status=1))
  said = []
  with mps.sharing(8, said.append):
    assert mps.PIPE_ENV not in os.environ
    assert mps.SHARE_ENV not in os.environ  # no MPS: no share either
  assert [c['args'] for c in calls(tmp_path)] == [['-d']]  # no quit
  assert len(said) == 1 and 'without NVIDIA MPS' in said[0]
  assert 'no GPU' in said[0]  # the program's own reason


def test_sharing_leaves_a_users_daemon_alone(clean_environ, tmp_path):
  put_first_on_path(clean_environ, fake_control(tmp_path))
  clean_environ.setenv(mps.PIPE_ENV, str(tmp_path / 'theirs'))
  with mps.sharing(8):
    assert os.environ[mps.PIPE_ENV] == str(tmp_path / 'theirs')
  assert calls(tmp_path) == []
  assert os.environ[mps.PIPE_ENV] == str(tmp_path / 'theirs')


def test_a_failure_of_mps_says_how_to_run_without_it():
  from pipeline import console  # pylint: disable=import-outside-toplevel
  hint = console.mps_hint('jaxlib.xla_extension.XlaRuntimeError: INTERNAL: '
                          'CUDA_ERROR_MPS_CONNECTION_FAILED: MPS client '
                          'failed to connect to the MPS control daemon')
  assert hint and f'{mps.MPS_ENV}=off' in hint
  assert console.mps_hint('CUDA_ERROR_OUT_OF_MEMORY') is None
  message = console.failure_message(
      RuntimeError('CUDA_ERROR_MPS_SERVER_NOT_READY'), verbose=False)
  assert message.splitlines()[-1] == hint


def test_a_daemon_that_keeps_its_output_open_does_not_hold_the_run(
    clean_environ, tmp_path):
  """The real daemon forks and lives on: featurize must not wait for the
  end of its output."""
  import time  # pylint: disable=import-outside-toplevel
  put_first_on_path(clean_environ, fake_control(tmp_path, daemon_s=20))
  began = time.perf_counter()
  with mps.sharing(2):
    entered = time.perf_counter() - began
    assert os.environ.get(mps.PIPE_ENV)
  assert entered < 10
