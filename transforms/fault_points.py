"""Named points where tests stop a job to kill it or fail it there.

``FEATURIZE_TEST_PAUSE_AT=POINT:SECONDS`` makes the job sleep at ``POINT``
(the windows between two steps are otherwise milliseconds wide, too
narrow for a test to kill a process in). Unset, ``pause`` does nothing.
"""
import os
import time

ENV = 'FEATURIZE_TEST_PAUSE_AT'


def pause(point: str) -> None:
  """Sleeps here if the environment names ``point``."""
  name, _, seconds = os.environ.get(ENV, '').partition(':')
  if name == point:
    time.sleep(float(seconds or 60))
