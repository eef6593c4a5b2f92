"""What the host's cores allow the GPU path on a profile: its CPU decode bound.

On the GPU path every image that nvJPEG's hardware does not take
(progressive JPEGs, PNG, WebP, GIF, CMYK...) is decoded by the CPU path's
own decoder (``imaging.decode_image``) on the host's cores. However fast
the GPU, a run cannot go faster than the host decodes those images,
divided by their share of the profile::

    end to end <= (CPU-routed images/s, all cores) / (CPU-routed share)

This measures that bound generously: every core of the machine decodes
nothing but the CPU-routed images, in processes (no GIL), while the GPU
path's own host work (reading, the header screen, nvJPEG's host side,
writing) is taken to cost nothing. A profile whose bound is below a
target cannot reach the target on this host, whatever the GPU side does.

Run on the GPU machine (its host is the one that matters)::

  python -m benchmarks.gpu.cpu_decode_bound --profile web \
      --ceiling 16614 --target 0.5 --out /tmp/bound

It prints the CPU cost an image by route, the bound, and each target with
PASS/FAIL, and writes ``cpu_decode_bound-<profile>.json`` under ``--out``.
"""
import argparse
import collections
import json
import multiprocessing
import os
import sys
import time
from typing import Dict, List, NamedTuple, Optional, Sequence

from benchmarks import measure
from benchmarks.gpu import profiles
from benchmarks.gpu.profiles import encoding
from transforms.decode import imaging
from transforms.extract.gpu import routing


class Bound(NamedTuple):
  """The end-to-end rate the CPU decoders allow.

  Attributes:
    cpu_images_per_s: CPU-routed images decoded a second by every core.
    cpu_share: Share of the profile's images routed to the CPU.
    images_per_s: The end-to-end bound, ``cpu_images_per_s / cpu_share``.
    ratio: ``images_per_s`` over the model's ceiling (None without one).
  """
  cpu_images_per_s: float
  cpu_share: float
  images_per_s: float
  ratio: Optional[float]


def bound(cpu_images_per_s: float, cpu_share: float,
          ceiling: Optional[float] = None) -> Bound:
  """The end-to-end bound for a share of CPU-routed images.

  Raises:
    ValueError: a share outside (0, 1] or a rate below 0.
  """
  if not 0 < cpu_share <= 1 or cpu_images_per_s < 0:
    raise ValueError(f'share {cpu_share} must be in (0, 1] and the rate '
                     f'{cpu_images_per_s} at least 0')
  total = cpu_images_per_s / cpu_share
  return Bound(cpu_images_per_s, cpu_share, total,
               total / ceiling if ceiling else None)


def cpu_routed(encoded: Sequence[bytes],
               config: imaging.DecodeConfig) -> Dict[str, List[bytes]]:
  """The images the GPU path decodes on the CPU, by route category
  (``routing.route`` as the run screens them); non-JPEG images also by
  format."""
  by_category = collections.defaultdict(list)
  for data in encoded:
    route = routing.route(data, config)
    if route.on_device:
      continue
    category = route.category
    if category == 'not_jpeg':
      try:
        category = f'not_jpeg/{imaging.sniff_format(data)}'
      except imaging.ImageError:
        pass
    by_category[category].append(data)
  return dict(by_category)


def _decode(data: bytes, config: imaging.DecodeConfig) -> None:
  try:
    imaging.decode_image(data, config)
  except imaging.ImageError:
    pass  # an error line on the run: still the decoder's time


def cpu_seconds_each(images: Sequence[bytes], config: imaging.DecodeConfig,
                     repeats: int = 2) -> float:
  """Mean CPU seconds to decode one of ``images`` in this process."""
  start = time.process_time()
  for _ in range(repeats):
    for data in images:
      _decode(data, config)
  return (time.process_time() - start) / (repeats * max(1, len(images)))


_WORKER_IMAGES: List[bytes] = []


def _init_worker(images: Sequence[bytes]) -> None:
  _WORKER_IMAGES[:] = images


def _decode_for(args) -> int:
  """A worker decodes the images in turn, from ``offset``, until
  ``deadline`` (``time.time()``); returns how many."""
  offset, deadline, config = args
  done = 0
  images = _WORKER_IMAGES
  while time.time() < deadline:
    _decode(images[(offset + done) % len(images)], config)
    done += 1
  return done


def all_cores_rate(images: Sequence[bytes], config: imaging.DecodeConfig,
                   workers: int, seconds: float) -> float:
  """Images/s that ``workers`` processes decode together, each looping
  over ``images`` from its own place, for ``seconds``."""
  context = multiprocessing.get_context('spawn')
  step = max(1, len(images) // workers)
  with context.Pool(workers, _init_worker, (list(images),)) as pool:
    # A warm-up second first: imports, Pillow's plugins, caches.
    warm = time.time() + 1.0
    pool.map(_decode_for, [(i * step, warm, config) for i in range(workers)])
    start = time.time()
    counts = pool.map(_decode_for, [
        (i * step, start + seconds, config) for i in range(workers)])
    elapsed = time.time() - start
  return sum(counts) / elapsed


def main(argv: Optional[Sequence[str]] = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--profile', default='web',
                      choices=sorted(profiles.PROFILES))
  parser.add_argument('--distinct', type=int, default=2048)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                      help='Decoding processes (default: one per core).')
  parser.add_argument('--seconds', type=float, default=10.0)
  parser.add_argument('--ceiling', type=float, default=None,
                      help='The model\'s ceiling in images/s, for the ratio.')
  parser.add_argument('--target', type=float, action='append', default=[],
                      help='A ratio of the ceiling to check (repeatable).')
  parser.add_argument('--out', default=None)
  args = parser.parse_args(argv)
  config = imaging.DecodeConfig()
  plans = profiles.draw_plans(args.profile, args.distinct, seed=args.seed)
  with encoding.process_pool(args.workers, len(plans)) as pool:
    encoded = profiles.encode_all(plans, pool)
  routed = cpu_routed(encoded, config)
  every = [data for images in routed.values() for data in images]
  share = len(every) / len(encoded)
  costs = {category: {'share': round(len(images) / len(encoded), 4),
                      'cpu_ms_each': round(
                          1e3 * cpu_seconds_each(images, config), 2)}
           for category, images in sorted(routed.items())}
  each = cpu_seconds_each(every, config, repeats=1)
  rate = all_cores_rate(every, config, args.workers, args.seconds)
  result = bound(rate, share, args.ceiling)
  report = {
      'profile': args.profile, 'images': len(encoded),
      'cpu': measure.machine().get('cpu', 'unknown'),
      'cores': os.cpu_count(), 'workers': args.workers,
      'cpu_routed_share': round(share, 4),
      'cpu_ms_each_one_process': round(1e3 * each, 2),
      'by_category': costs,
      'cpu_images_per_s_all_cores': round(rate, 1),
      'cpu_ms_each_all_cores': round(1e3 * args.workers / rate, 2),
      'end_to_end_bound_images_per_s': round(result.images_per_s, 1),
      'ceiling_images_per_s': args.ceiling,
      'bound_ratio': (round(result.ratio, 3) if result.ratio is not None
                      else None),
      'targets': [],
  }
  print(f'{args.profile}: {len(every)} of {len(encoded)} images '
        f'({share:.1%}) decode on the CPU; {report["cpu"]}, '
        f'{args.workers} processes')
  for category, cost in costs.items():
    print(f'  {category:20s} {cost["share"]:7.2%}  '
          f'{cost["cpu_ms_each"]:7.2f} ms of CPU each (one process)')
  print(f'all cores: {rate:,.0f} CPU-routed images/s '
        f'({report["cpu_ms_each_all_cores"]} ms of a core each); end to end '
        f'at most {result.images_per_s:,.0f} images/s' +
        (f' = {result.ratio:.3f} of the ceiling {args.ceiling:,.0f}'
         if result.ratio is not None else ''))
  for target in args.target:
    if result.ratio is None:
      parser.error('--target needs --ceiling')
    passed = result.ratio >= target
    report['targets'].append({'target': target, 'pass': passed})
    print(f'{"PASS" if passed else "FAIL"}: {args.profile} avg >= {target} '
          f'of the ceiling is within the CPU decode bound '
          f'({result.ratio:.3f})')
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f'cpu_decode_bound-{args.profile}.json')
    with open(path, 'w') as f:
      json.dump(report, f, indent=1)
  return report


if __name__ == '__main__':
  sys.exit(0 if main() else 1)
