"""``python -m benchmarks.gpu.profiles``: writes one profile's dataset
and prints its statistics as JSON."""
import argparse
import json
import sys
import time
from typing import Optional, Sequence


from benchmarks.gpu.profiles.draws import PROFILES, SHARD_FORMATS
from benchmarks.gpu.profiles.shards import write_profile


def main(argv: Optional[Sequence[str]] = None) -> dict:
  """The command line: writes one profile's dataset, prints its stats."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--profile', choices=sorted(PROFILES), required=True)
  parser.add_argument('--images', type=int, required=True)
  parser.add_argument('--out', required=True, help='Folder for the shards.')
  parser.add_argument('--distinct', type=int, default=2048)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--per-shard', type=int, default=1000)
  parser.add_argument('--format', choices=SHARD_FORMATS, default=None,
                      help='Shard format (default: the profile\'s own).')
  parser.add_argument('--processes', type=int, default=None)
  args = parser.parse_args(argv)
  start = time.monotonic()
  data = write_profile(args.profile, args.out, args.images,
                       per_shard=args.per_shard, distinct=args.distinct,
                       seed=args.seed, shard_format=args.format,
                       processes=args.processes)
  report = {'profile': args.profile, 'shard_format': data.shard_format,
            'pattern': data.pattern, 'shards': len(data.paths),
            'seconds': round(time.monotonic() - start, 1),
            'stats': data.stats}
  json.dump(report, sys.stdout, indent=2)
  print()
  return report


if __name__ == '__main__':
  main()
