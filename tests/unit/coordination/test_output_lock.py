"""The output's lock on local folders: who holds it, who is refused, and
when a lock left behind is taken over."""
import datetime
import json
import multiprocessing
import os
import socket

import pytest

from transforms.coordination import output_lock
from transforms.coordination.output_lock import Locked


def _lock_file(root) -> str:
  return os.path.join(str(root), '.lock')


def _held(root) -> dict:
  with open(_lock_file(root)) as f:
    return json.load(f)


def _age(root, hours: float) -> None:
  """Backdates the lock's start by ``hours``."""
  holder = _held(root)
  holder['started_at'] = (
      datetime.datetime.now(datetime.timezone.utc)
      - datetime.timedelta(hours=hours)).isoformat(timespec='seconds')
  with open(_lock_file(root), 'w') as f:
    json.dump(holder, f)


def test_acquire_creates_the_lock_naming_its_holder(tmp_path):
  root = tmp_path / 'out'  # not there yet: acquire makes it
  mine = output_lock.acquire(str(root), 'job-a', job='run')
  assert output_lock.lock_path(str(root) + '/') == _lock_file(root)
  assert _held(root) == mine
  assert mine['holder'] == 'job-a' and mine['job'] == 'run'
  assert mine['host'] == socket.gethostname()
  assert mine['pid'] == os.getpid()
  assert mine['pid_start'] == output_lock._start_ticks(os.getpid())
  assert mine['pid_start'] is not None and mine['watch'] is False
  started = datetime.datetime.fromisoformat(mine['started_at'])
  now = datetime.datetime.now(datetime.timezone.utc)
  assert abs((now - started).total_seconds()) < 60
  assert output_lock.read(_lock_file(root)) == (mine, None)


def test_another_holder_is_refused_and_the_lock_kept(tmp_path):
  root = str(tmp_path)
  first = output_lock.acquire(root, 'job-a', job='refresh')
  with pytest.raises(Locked) as refused:
    output_lock.acquire(root, 'job-b', job='run')
  message = str(refused.value)
  assert message.startswith(f'{root} is being refreshed by refresh job-a '
                            f'(host {socket.gethostname()}, pid '
                            f'{os.getpid()}, since {first["started_at"]})')
  assert message.endswith(
      f'its lock {_lock_file(root)} is taken over after 6 h, or now with '
      '--break-lock if that job is dead')
  assert _held(root) == first
  output_lock.release(root, 'job-a')
  output_lock.acquire(root, 'job-c', job='run')
  with pytest.raises(Locked, match=r'is being written by run job-c .* after '
                     r'0\.5 h'):
    output_lock.acquire(root, 'job-d', timeout_s=1800)


def test_only_the_holder_releases(tmp_path):
  root = str(tmp_path)
  output_lock.release(root, 'nobody')  # no lock: nothing to do
  mine = output_lock.acquire(root, 'job-a')
  output_lock.release(root, 'job-b')
  assert _held(root) == mine
  output_lock.release(root, 'job-a')
  assert not os.path.exists(_lock_file(root))
  assert output_lock.read(_lock_file(root)) == (None, None)
  assert os.listdir(root) == []


def test_a_stale_lock_is_taken_over_after_the_timeout(tmp_path):
  root = str(tmp_path)
  output_lock.acquire(root, 'job-a')
  _age(root, 2)
  with pytest.raises(Locked):
    output_lock.acquire(root, 'job-b', timeout_s=3 * 3600)
  assert _held(root)['holder'] == 'job-a'
  taken = output_lock.acquire(root, 'job-b', timeout_s=3600)
  assert _held(root) == taken and taken['holder'] == 'job-b'
  # The stale lock was moved aside and deleted, not left next to it.
  assert os.listdir(root) == ['.lock']
  output_lock.release(root, 'job-a')  # the old holder's late release
  assert _held(root)['holder'] == 'job-b'


def test_break_lock_takes_over_at_once(tmp_path):
  root = str(tmp_path)
  output_lock.acquire(root, 'job-a')
  taken = output_lock.acquire(root, 'job-b', break_lock=True)
  assert _held(root) == taken and taken['holder'] == 'job-b'
  assert os.listdir(root) == ['.lock']


def test_a_watched_lock_is_kept_while_its_process_lives(tmp_path):
  root = str(tmp_path)
  mine = output_lock.acquire(root, 'job-a', watch=True)
  assert mine['watch'] is True
  assert not output_lock.holder_is_gone(mine)  # this process
  with pytest.raises(Locked):
    output_lock.acquire(root, 'job-b')


def test_a_watched_lock_whose_process_is_gone_is_taken_over(tmp_path):
  root = str(tmp_path)
  child = multiprocessing.get_context('fork').Process(
      target=output_lock.acquire, args=(root, 'job-a'),
      kwargs={'watch': True, 'job': 'run'})
  child.start()
  child.join(timeout=30)
  assert child.exitcode == 0
  left = _held(root)
  assert left['holder'] == 'job-a' and left['pid'] == child.pid
  assert left['pid'] != os.getpid() and left['watch'] is True
  assert output_lock._start_ticks(child.pid) is None
  assert output_lock.holder_is_gone(left)
  taken = output_lock.acquire(root, 'job-b')  # default timeout, no break
  assert _held(root) == taken and taken['holder'] == 'job-b'


def test_an_unwatched_lock_of_a_dead_process_waits_for_the_timeout(tmp_path):
  root = str(tmp_path)
  child = multiprocessing.get_context('fork').Process(
      target=output_lock.acquire, args=(root, 'job-a'))
  child.start()
  child.join(timeout=30)
  assert child.exitcode == 0
  assert not output_lock.holder_is_gone(_held(root))
  with pytest.raises(Locked, match='by refresh job-a'):
    output_lock.acquire(root, 'job-b')


def test_holder_is_gone_tells_a_reused_pid_and_another_host():
  me = {'holder': 'x', 'host': socket.gethostname(), 'pid': os.getpid(),
        'pid_start': output_lock._start_ticks(os.getpid()), 'watch': True}
  assert not output_lock.holder_is_gone(me)
  # The same PID, started at another time: another process took it.
  assert output_lock.holder_is_gone(dict(me, pid_start=me['pid_start'] + 1))
  assert output_lock.holder_is_gone(dict(me, pid=None))
  # Elsewhere, or not watched: unknowable, so not gone.
  assert not output_lock.holder_is_gone(dict(me, host='elsewhere', pid=None))
  assert not output_lock.holder_is_gone(dict(me, watch=False, pid=None))
  assert output_lock.describe_holder(
      {'job': 'run', 'holder': 'h', 'host': 'm', 'pid': 7,
       'started_at': 't'}) == 'run h (host m, pid 7, since t)'


def test_two_takers_of_one_stale_lock_cannot_both_win(tmp_path):
  """Both read the same stale lock; the first moves it aside and makes
  its own; the second must find that one, put it back and be refused
  (it used to move the winner's lock aside too, and both held it)."""
  root = str(tmp_path)
  output_lock.acquire(root, 'dead-job', job='run')
  _age(root, 10)
  stale = _held(root)
  target = _lock_file(root)
  # The first taker, all the way.
  assert output_lock._remove_stale(target, stale)  # pylint: disable=protected-access
  mine = json.dumps({'holder': 'first-taker'}).encode()
  assert output_lock.create(target, mine, None)
  # The second, from the stale lock it read before.
  assert not output_lock._remove_stale(target, stale)  # pylint: disable=protected-access
  assert _held(root) == {'holder': 'first-taker'}
  assert [n for n in os.listdir(root) if n != '.lock'] == []


def test_an_unreadable_lock_is_stale_by_its_files_age(tmp_path):
  """A lock created but never written (its job killed in between) is not
  JSON: refused while young, taken over once old or with --break-lock."""
  root = str(tmp_path)
  target = _lock_file(root)
  with open(target, 'w'):
    pass  # empty
  with pytest.raises(Locked, match='an unreadable lock'):
    output_lock.acquire(root, 'job-b', job='run')
  assert output_lock.acquire(root, 'job-b', job='run',
                             break_lock=True)['holder'] == 'job-b'
  with open(target, 'w') as f:
    f.write('{"holder": "job')  # cut short
  old = os.path.getmtime(target) - 10 * 3600
  os.utime(target, (old, old))
  assert output_lock.acquire(root, 'job-c', timeout_s=3600,
                             job='run')['holder'] == 'job-c'
