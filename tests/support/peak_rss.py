"""Runs ``featurize`` in this process, then prints its peak RSS.

``python -m tests.support.peak_rss run --input ...`` prints ``PEAK_RSS_KB <n>``
last. Read from ``/proc/self/status`` (VmHWM: the high-water mark of this
process's own memory since it started). ``ru_maxrss`` from ``wait4`` is no
good here: Linux carries the parent's peak over ``fork``/``exec``, so a
child of a large pytest process would report the parent's size.
"""
import sys

from pipeline import cli


def peak_rss_kb() -> int:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1])
  raise RuntimeError('no VmHWM in /proc/self/status')


if __name__ == '__main__':
  status = cli.main(sys.argv[1:])
  print(f'PEAK_RSS_KB {peak_rss_kb()}')
  sys.exit(status)
