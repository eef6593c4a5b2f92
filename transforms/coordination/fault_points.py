"""Named points where tests stop a job to kill it or fail it there.

``FEATURIZE_TEST_PAUSE_AT=POINT:SECONDS[:MARKER]`` makes the job sleep the
first time it reaches ``POINT`` in a process (the windows between two
steps are otherwise milliseconds wide, too narrow for a test to kill a
process in), after creating the file ``MARKER`` so that the test knows it
is there. Unset, ``pause`` costs one dictionary lookup.
"""
import os
import time
from typing import Set

ENV = 'FEATURIZE_TEST_PAUSE_AT'
_paused: Set[str] = set()


def pause(point: str) -> None:
  """Sleeps here if the environment names ``point``, once per process."""
  setting = os.environ.get(ENV)
  if not setting:
    return
  name, _, rest = setting.partition(':')
  if name != point or point in _paused:
    return
  _paused.add(point)
  seconds, _, marker = rest.partition(':')
  if marker:
    with open(marker, 'w') as f:
      f.write(f'{os.getpid()}\n')
  time.sleep(float(seconds or 60))
