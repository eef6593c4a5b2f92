"""The GPU benchmark, in one run on the GPU machine.

``python -m benchmarks.gpu.run --out benchmarks/results/gpu`` measures,
side by side: the bare-model ceilings (``ceiling``), decoding alone, and
featurize end to end (``end_to_end``) with ``--pooling avg`` and ``none``
in float32 and bfloat16 over 20,000 and 100,000 images, plus a profile
of one run. It prints each target with PASS/FAIL and writes
``summary.json`` and ``RESULTS.md`` to ``--out``.
"""
import argparse
import json
import os
import platform
import pstats
import subprocess
import sys
import time

from benchmarks.gpu import ceiling, dataset, end_to_end

PRECISIONS = ('float32', 'bfloat16')
POOLINGS = ('avg', 'none')

# Where the profile's time goes, by the file a function lives in.
PROFILE_GROUPS = (
    ('shard reading', ('transforms/read.py', 'transforms/shard_readers.py',
                       'transforms/tfrecord_framing.py', 'example_proto',
                       'google/protobuf', 'crc32c')),
    ('header screen', ('transforms/gpu/jpeg_header.py',)),
    ('decode + resize (nvJPEG, torch)', ('transforms/gpu/decoders.py',
                                         'torch', 'torchvision')),
    ('CPU fallback decode', ('transforms/decode.py', 'transforms/imaging.py',
                             'PIL')),
    ('model (JAX dispatch and wait)', ('transforms/gpu/device_model.py',
                                       'jax', 'jaxlib')),
    ('GPU step glue', ('transforms/gpu/',)),
    ('writer', ('transforms/bundle_files.py', 'transforms/example_codec.py',
                'transforms/write.py', 'transforms/publish.py')),
    ('Beam per-element machinery', ('apache_beam',)),
)


def gpu_name() -> str:
  try:
    return subprocess.run(
        ['nvidia-smi', '--query-gpu=name', '--format=csv,noheader'],
        capture_output=True, text=True, check=True).stdout.splitlines()[0]
  except (OSError, subprocess.CalledProcessError):
    return 'none (CPU smoke run)'


def cpu_name() -> str:
  with open('/proc/cpuinfo') as f:
    for line in f:
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  return platform.processor()


def profile(pattern: str, out: str, extra) -> dict:
  """A cProfile of one run (in one process: the FnApiRunner runs the
  bundles in the launcher's thread), grouped by where the code lives."""
  stats_path = out + '.prof'
  subprocess.run([sys.executable, '-m', 'cProfile', '-o', stats_path, '-m',
                  'pipeline.cli', 'run', '--config', os.path.join(
                      end_to_end.ROOT, 'run_configs', 'local.yaml'),
                  '--input', pattern, '--output', out, '--device', 'gpu',
                  '--weights', 'random', '--quiet', *extra],
                 cwd=end_to_end.ROOT, check=True, capture_output=True)
  stats = pstats.Stats(stats_path)
  groups = {name: 0.0 for name, _ in PROFILE_GROUPS}
  groups['other'] = 0.0
  total = 0.0
  for (path, _, _), (_, _, own, _, _) in stats.stats.items():
    total += own
    for name, needles in PROFILE_GROUPS:
      if any(needle in path for needle in needles):
        groups[name] += own
        break
    else:
      groups['other'] += own
  top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:15]
  return {
      'seconds_by_group': {k: round(v, 2) for k, v in groups.items()},
      'share_by_group': {k: round(v / total, 3) for k, v in groups.items()},
      'top_functions_own_s': [
          (f'{os.path.relpath(p, end_to_end.ROOT) if p.startswith("/") else p}'
           f':{line} {name}', round(v[2], 2)) for (p, line, name), v in top],
  }


def write_weights(folder: str) -> str:
  """The tests' seeded weight file (the one the reference was made with)."""
  # pylint: disable=import-outside-toplevel
  from tests.conftest import write_official_weights
  from transforms import vgg16
  path = os.path.join(folder, vgg16.WEIGHTS_FILE_NOTOP)
  if not os.path.exists(path):
    write_official_weights(path)
  return path


def main(argv=None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument('--out', default='benchmarks/results/gpu')
  parser.add_argument('--data', default='/tmp/featurize-gpu-bench')
  parser.add_argument('--sizes', default='20000,100000',
                      help='bfloat16 runs\' two dataset sizes.')
  parser.add_argument('--float32-sizes', default='10000,30000',
                      help='float32 runs\' (the model alone runs at ~1,800 '
                      'images/s: smaller, to fit the device time).')
  parser.add_argument('--compare-inline', action='store_true',
                      help='Also run avg/bfloat16 with batches prepared on '
                      "the bundle's thread (no helper thread).")
  parser.add_argument('--skip-tf32-parity', action='store_true')
  parser.add_argument('--profile', action='store_true',
                      help='Also a cProfile of one run (slow to start).')
  parser.add_argument('--seconds', type=float, default=3.0)
  parser.add_argument('--batches', default='64,128,256,512')
  parser.add_argument('--batch-size', type=int, default=256)
  parser.add_argument('--skip-ceilings', action='store_true',
                      help='CPU smoke runs: no torch, no GPU.')
  parser.add_argument('--reference', default='.gpu-ref/reference.npz',
                      help='tests/gpu/reference.py\'s file, for TF32 parity.')
  args = parser.parse_args(argv)
  small, large = (int(s) for s in args.sizes.split(','))
  sizes = {'bfloat16': (small, large)}
  if args.float32_sizes != 'none':
    sizes['float32'] = tuple(int(s) for s in args.float32_sizes.split(','))
  batches = [int(b) for b in args.batches.split(',')]
  os.makedirs(args.out, exist_ok=True)
  summary = {'gpu': gpu_name(), 'cpu': cpu_name(),
             'date': time.strftime('%Y-%m-%d'), 'batch_size': args.batch_size,
             'images': {'resolution': list(dataset.IMAGENET_SIZE),
                        'jpeg_quality': dataset.QUALITY,
                        'mean_jpeg_kb': round(dataset.mean_jpeg_bytes() / 1024,
                                              1)}}
  started = time.perf_counter()
  shards = dataset.write_shards(os.path.join(args.data, 'all'), large)
  per_shard = 1000
  subsets = {}
  for size in set(sum(sizes.values(), ())):
    # A folder per size, of links to the shards.
    folder = os.path.join(args.data, f'first-{size}')
    os.makedirs(folder, exist_ok=True)
    for path in shards[:(size + per_shard - 1) // per_shard]:
      link = os.path.join(folder, os.path.basename(path))
      if not os.path.exists(link):
        os.symlink(path, link)
    subsets[size] = os.path.join(folder, '*.tfrecord')
  print(f'data ready in {time.perf_counter() - started:.1f} s', flush=True)

  if not args.skip_ceilings:
    summary['ceiling_featurize'] = ceiling.featurize_model(
        PRECISIONS, batches, args.seconds)
    summary['ceiling_torchvision'] = ceiling.torchvision_model(
        PRECISIONS, batches, args.seconds)
    summary['decode_alone'] = ceiling.decode(
        [s.data for s in dataset.photo_variants(
            64, dataset.IMAGENET_SIZE, quality=dataset.QUALITY)],
        args.batch_size, args.seconds)
    # The ceiling of each precision as featurize computes it: float32 is
    # true float32 here; torchvision's float32 (PyTorch's default, TF32
    # convolutions) is reported beside it, not counted.
    summary['ceiling_images_per_s'] = {
        'float32': max(summary['ceiling_featurize']['float32'].values()),
        'bfloat16': max(
            list(summary['ceiling_featurize']['bfloat16'].values()) +
            list(summary['ceiling_torchvision']['bfloat16'].values()))}
    if os.path.exists(args.reference) and not args.skip_tf32_parity:
      summary['tf32_parity'] = ceiling.tf32_parity(
          args.reference, write_weights(args.data))

  runs, rates = {}, {}
  if args.compare_inline:
    inline_env = dict(os.environ, FEATURIZE_GPU_INLINE_PREPARE='1')
    extra = ['--pooling', 'avg', '--precision', 'bfloat16', '--batch-size',
             str(args.batch_size)]
    inline = [end_to_end.featurize_run(
        subsets[n], os.path.join(args.data, 'out'), n, extra, env=inline_env)
              for n in sizes['bfloat16']]
    summary['avg_bfloat16_without_helper_thread'] = {
        'runs': inline, 'images_per_s': end_to_end.steady_rate(*inline)}
  for pooling in POOLINGS:
    for precision in sizes:
      extra = ['--pooling', pooling, '--precision', precision,
               '--batch-size', str(args.batch_size)]
      name = f'{pooling}/{precision}'
      out = os.path.join(args.data, 'out')
      runs[name] = [end_to_end.featurize_run(subsets[n], out, n, extra)
                    for n in sizes[precision]]
      rates.setdefault(pooling, {})[precision] = end_to_end.steady_rate(
          *runs[name])
  summary['end_to_end_runs'] = runs
  summary['end_to_end_images_per_s'] = rates
  targets = []
  if 'ceiling_images_per_s' in summary:
    summary['end_to_end_ratio'] = {
        pooling: {p: round(rates[pooling][p] /
                           summary['ceiling_images_per_s'][p], 3)
                  for p in sizes} for pooling in POOLINGS}
    bf16_ratio = (rates['avg']['bfloat16'] /
                  summary['ceiling_images_per_s']['bfloat16'])
    targets.append(('end-to-end avg bfloat16 >= 0.5 x best bfloat16 ceiling '
                    f'({rates["avg"]["bfloat16"]:.0f} / '
                    f'{summary["ceiling_images_per_s"]["bfloat16"]:.0f} = '
                    f'{bf16_ratio:.2f})', bf16_ratio >= 0.5))
  for name, (few, many) in runs.items():
    grew = many['host_peak_rss_mib'] / few['host_peak_rss_mib']
    targets.append((f'{name}: host peak RSS flat from {few["images"]} to '
                    f'{many["images"]} images ({few["host_peak_rss_mib"]} -> '
                    f'{many["host_peak_rss_mib"]} MiB, x{grew:.2f} <= 1.10)',
                    grew <= 1.10))
    if few['gpu_memory_peak_mib'] and many['gpu_memory_peak_mib']:
      gpu_grew = many['gpu_memory_peak_mib'] / few['gpu_memory_peak_mib']
      targets.append((f'{name}: GPU peak memory flat ('
                      f'{few["gpu_memory_peak_mib"]} -> '
                      f'{many["gpu_memory_peak_mib"]} MiB, x{gpu_grew:.2f} '
                      '<= 1.10)', gpu_grew <= 1.10))
  summary['time_per_image_us'] = {
      name: end_to_end.where_time_goes(
          many, args.batch_size, rates[name.split('/')[0]][name.split('/')[1]])
      for name, (_, many) in runs.items()}
  if args.profile:
    summary['profile'] = profile(
        subsets[small], os.path.join(args.data, 'out-profile'),
        ['--pooling', 'avg', '--precision', 'bfloat16', '--batch-size',
         str(args.batch_size)])
  summary['targets'] = [{'target': t, 'pass': ok} for t, ok in targets]
  for target, ok in targets:
    print(f'{"PASS" if ok else "FAIL"}  {target}')
  summary['benchmark_seconds'] = round(time.perf_counter() - started, 1)
  with open(os.path.join(args.out, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  print(json.dumps({k: summary.get(k) for k in (
      'gpu', 'ceiling_images_per_s', 'end_to_end_images_per_s',
      'end_to_end_ratio')}, indent=1))
  print(json.dumps(summary['time_per_image_us'], indent=1))
  return 0 if all(ok for _, ok in targets) else 1


if __name__ == '__main__':
  sys.exit(main())
