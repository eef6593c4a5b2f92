"""The GPU benchmark, in one run on the GPU machine.

``python -m benchmarks.gpu.run --out benchmarks/results/gpu`` measures,
side by side in one run: the model's ceiling (the model alone on
device-resident batches, ``ceiling``) and featurize end to end
(``end_to_end``) on generated datasets shaped like users' data
(``profiles``: ``imagenet``, ``web``, and ``uniform`` 500x375 baseline
JPEGs for comparison), each over 20,000 and 100,000 images, in bfloat16
with ``--pooling avg`` (and ``none`` on ``imagenet``). First it runs
``imagenet`` in several layouts (by default 4 and 8 SDK worker processes
sharing the GPU; ``4s`` would be 4 feeding one server process that owns
it, ``--large-model``), and the profiles' runs use the fastest. A run's
steady rate is the slope of its progress (``end_to_end``). It prints each
target with PASS/FAIL and writes ``summary.json`` (figures under
``profiles.<name>``) to ``--out``. Then each model of ``--models``
(ResNet50 and EfficientNetB0 by default) runs on ``imagenet`` with
``--pooling avg`` at its own input size, against its own ceiling, with
the same layout (figures under ``models.<name>``).
"""
import argparse
import json
import os
import platform
import pstats
import re
import subprocess
import sys
import time

from benchmarks.gpu import ceiling, end_to_end, multi_gpu, profiles

POOLINGS = ('avg', 'none')

# Where the profile's time goes, by the file a function lives in.
PROFILE_GROUPS = (
    ('shard reading', ('transforms/read/image_shards.py',
                       'transforms/read/shard_readers.py',
                       'transforms/read/tfrecord_framing.py', 'example_proto',
                       'google/protobuf', 'crc32c')),
    ('header screen', ('transforms/extract/gpu/jpeg_header.py',)),
    ('decode + resize (nvJPEG, torch)', ('transforms/extract/gpu/decoders.py',
                                         'torch', 'torchvision')),
    ('CPU fallback decode', ('transforms/decode/decode_images.py',
                             'transforms/decode/imaging.py', 'PIL')),
    ('model (JAX dispatch and wait)',
     ('transforms/extract/gpu/device_model.py', 'jax', 'jaxlib')),
    ('GPU step glue', ('transforms/extract/gpu/',)),
    ('writer', ('transforms/write/bundle_files.py',
                'transforms/write/example_codec.py',
                'transforms/write/outputs.py',
                'transforms/write/publish_run.py')),
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
  from tests.support.weights import write_official_weights
  from transforms.extract import models
  path = os.path.join(folder, models.NAMED_MODELS['vgg16'].weights_file_notop)
  if not os.path.exists(path):
    write_official_weights(path)
  return path


def subset(data: 'profiles.ProfileData', folder: str, images: int,
           per_shard: int) -> str:
  """A folder of links to the first shards of ``data`` holding ``images``
  images; returns the pattern featurize reads."""
  os.makedirs(folder, exist_ok=True)
  extension = data.paths[0].rsplit('.', 1)[-1]
  for path in data.paths[:(images + per_shard - 1) // per_shard]:
    link = os.path.join(folder, os.path.basename(path))
    if not os.path.exists(link):
      os.symlink(path, link)
  return os.path.join(folder, f'*.{extension}')


# Targets of the end-to-end ratio to the ceiling, by profile and pooling
# (bfloat16); uniform's is "no slower than before" (UNIFORM_BEFORE).
RATIO_TARGETS = {('imagenet', 'avg'): 0.8, ('imagenet', 'none'): 0.5,
                 ('web', 'avg'): 0.5}
# The uniform 500x375 figure before this design (RESULTS.md, run 5): avg,
# bfloat16, one process, on the same kind of machine.
UNIFORM_BEFORE = 9638.6


def _profile_runs(args, patterns, out, extra, processes, server, env):
  """A profile's runs: the small and the large size, or with
  ``--one-run`` the large one alone, whose memory until the small size
  stands in for the small run's."""
  small, large = (int(s) for s in args.sizes.split(','))
  if not args.one_run:
    return tuple(end_to_end.featurize_run(
        patterns[n], out, n, extra, processes=processes, server=server,
        env=env) for n in (small, large))
  # One run of the large size: its progress slope is the rate, and memory
  # is compared within it, until the small size against the whole run.
  many = end_to_end.featurize_run(
      patterns[large], out, large, extra, processes=processes,
      server=server, env=env, memory_from=small)
  until = many.get('memory_until') or {}
  few = {'images': until.get('images', small),
         'host_peak_rss_mib': until.get(
      'host_peak_rss_mib') or many['host_peak_rss_mib'],
         'gpu_memory_peak_mib': until.get('gpu_memory_peak_mib')}
  return few, many


def _model_run(args, model: str, patterns, out, layout, summary):
  """``model`` end to end on imagenet avg (one run of the large size,
  memory compared within it) against its own ceiling; its figures go to
  ``summary['models'][model]``, its targets are returned."""
  processes, server, env = layout
  small, large = (int(s) for s in args.sizes.split(','))
  entry = summary.setdefault('models', {})[model] = {
      'profile': 'imagenet', 'pooling': 'avg', 'precision': 'bfloat16'}
  extra = ['--model', model, '--pooling', 'avg', '--precision', 'bfloat16',
           '--batch-size', str(args.batch_size)]
  if args.image_size != 224:  # CPU smoke runs; else the model's own size
    extra += ['--image-size', str(args.image_size)]
  try:
    many = end_to_end.featurize_run(patterns[large], out, large, extra,
                                    processes=processes, server=server,
                                    env=env, memory_from=small)
  except RuntimeError as e:
    entry['failed'] = str(e)[-3000:]
    return [(f'{model} imagenet avg: the run completes '
             f'({str(e).splitlines()[0]})', False)]
  rate = end_to_end.steady(many)
  entry.update({
      'end_to_end_images_per_s': rate,
      'all_busy_images_per_s': many.get('all_busy_images_per_s'),
      'after_first_record_images_per_s':
          end_to_end.after_first_record_rate(many),
      'host_peak_rss_mib': many['host_peak_rss_mib'],
      'gpu_memory_peak_mib': many['gpu_memory_peak_mib'],
      'memory_until': many.get('memory_until'), 'run': many})
  targets = [(f'{model} imagenet avg: the run completes, {large} images',
              True)]
  until = many.get('memory_until') or {}
  if until.get('host_peak_rss_mib'):
    grew = many['host_peak_rss_mib'] / until['host_peak_rss_mib']
    targets.append((f'{model} imagenet avg: host RSS flat from '
                    f'{until.get("images", small)} to {large} images '
                    f'(x{grew:.2f} <= 1.10)', grew <= 1.10))
  if not args.skip_ceilings:
    top = ceiling.featurize_model(['bfloat16'], [args.batch_size],
                                  args.seconds, pooling='avg', tf32=False,
                                  model=model)['bfloat16'][args.batch_size]
    entry['ceiling_images_per_s'] = top
    entry['end_to_end_ratio'] = round(rate / top, 3) if rate else None
    print(f'{model} imagenet avg: end to end {rate or 0:.0f} images/s, '
          f'ceiling {top:.0f} ({entry["end_to_end_ratio"]} x)', flush=True)
  return targets


def parse_layout(label: str):
  """``4s:VAR=1+OTHER=2`` -> (4, True, environment with those set)."""
  layout, _, settings = label.partition(':')
  env = None
  if settings:
    env = dict(os.environ)
    env.update(item.split('=', 1) for item in settings.split('+'))
  return int(layout.rstrip('s')), layout.endswith('s'), env


def main(argv=None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument('--out', default='benchmarks/results/gpu')
  parser.add_argument('--data', default='/tmp/featurize-gpu-bench')
  parser.add_argument('--profiles', default='uniform,imagenet,web')
  parser.add_argument('--sizes', default='20000,100000',
                      help='Each run\'s two dataset sizes (steady rate '
                      'from their difference).')
  parser.add_argument('--processes', type=int, default=0,
                      help='SDK worker processes; 0: the best layout of '
                      '--compare.')
  parser.add_argument('--server', action='store_true',
                      help='With --processes N: one server process owns '
                      'the GPU (--large-model).')
  parser.add_argument('--compare', default='4,8',
                      help='Layouts to run first on imagenet avg at the '
                      'small size: worker counts, "s" for a GPU server '
                      'process (--large-model), and after a ":" '
                      'environment settings for the run, "VAR=VALUE" '
                      'joined by "+" (4:OMP_NUM_THREADS=1); "none" to '
                      'skip.')
  parser.add_argument('--compare-images', type=int, default=0,
                      help='Images of each compared layout\'s run '
                      '(default: the small size).')
  parser.add_argument('--none-profiles', default='imagenet',
                      help='Profiles also run with --pooling none.')
  parser.add_argument('--distinct', type=int, default=2048)
  parser.add_argument('--per-shard', type=int, default=1000)
  parser.add_argument('--seconds', type=float, default=3.0)
  parser.add_argument('--batch-size', type=int, default=256)
  parser.add_argument('--image-size', type=int, default=224,
                      help='Smaller for CPU smoke runs (on the stand-in, '
                      'FEATURIZE_GPU_PATH_ON_CPU=1).')
  parser.add_argument('--spy', action='store_true',
                      help='py-spy stacks of each compared layout '
                      '(spy-<layout>-gil.txt and -native.txt in --out).')
  parser.add_argument('--one-run', action='store_true',
                      help='One run per profile, of the large size, with '
                      'memory compared within it (from the small size on).')
  parser.add_argument('--compare-only', action='store_true',
                      help='Stop after the layouts\' comparison.')
  parser.add_argument('--profile-run', action='store_true',
                      help='Also a cProfile of one run (slow to start).')
  parser.add_argument('--skip-ceilings', action='store_true',
                      help='CPU smoke runs: no GPU.')
  parser.add_argument('--multi-gpu', default='',
                      help='GPU counts (e.g. 1,2,4): run imagenet avg on '
                      'the first N GPUs for each, --gpu-processes worker '
                      'processes a GPU, and write multi_gpu.<n> '
                      '(benchmarks/gpu/multi_gpu.py); then stop.')
  parser.add_argument('--models', default='resnet50,efficientnetb0',
                      help='Models other than VGG16 to run end to end on '
                      'imagenet avg against their own ceilings, after the '
                      'profiles ("" for none).')
  parser.add_argument('--models-only', action='store_true',
                      help='Skip the profiles\' VGG16 runs: only --models.')
  parser.add_argument('--gpu-processes', type=int, default=8,
                      help='Worker processes a GPU for --multi-gpu.')
  args = parser.parse_args(argv)
  small, large = (int(s) for s in args.sizes.split(','))
  names = [n for n in args.profiles.split(',') if n]
  none_profiles = set(args.none_profiles.split(',')) & set(names)
  os.makedirs(args.out, exist_ok=True)
  summary = {'gpu': gpu_name(), 'cpu': cpu_name(),
             'cpu_cores': len(os.sched_getaffinity(0)),
             'date': time.strftime('%Y-%m-%d'), 'batch_size': args.batch_size,
             'precision': 'bfloat16',
             'profiles': {}}
  started = time.perf_counter()

  def save():
    summary['benchmark_seconds'] = round(time.perf_counter() - started, 1)
    with open(os.path.join(args.out, 'summary.json'), 'w') as f:
      json.dump(summary, f, indent=2)

  data, patterns = {}, {}
  for name in names:
    began = time.perf_counter()
    data[name] = profiles.write_profile(
        name, os.path.join(args.data, name), large, per_shard=args.per_shard,
        distinct=args.distinct)
    patterns[name] = {n: subset(data[name], os.path.join(
        args.data, f'{name}-first-{n}'), n, args.per_shard)
                      for n in (small, large)}
    summary['profiles'][name] = {'data': data[name].stats,
                                 'shard_format': data[name].shard_format}
    print(f'{name}: {large} images ready in '
          f'{time.perf_counter() - began:.1f} s: {data[name].stats}',
          flush=True)
  save()

  ceilings = {}
  if not args.skip_ceilings:
    for pooling in POOLINGS:
      rates = ceiling.featurize_model(['bfloat16'], [args.batch_size],
                                      args.seconds, pooling=pooling,
                                      tf32=False)
      ceilings[pooling] = rates['bfloat16'][args.batch_size]
    summary['ceiling_images_per_s'] = {
        pooling: {'bfloat16': rate} for pooling, rate in ceilings.items()}
    save()

  targets = []
  best = None
  out = os.path.join(args.data, 'out')
  # One short run first: the first run on a fresh machine pays one-off
  # costs (CUDA's and XLA's caches on disk, the data's first read) that
  # would not cancel out in the two sizes' difference.
  warm_up = subset(data[names[0]], os.path.join(args.data, 'warm-up'),
                   args.per_shard, args.per_shard)
  end_to_end.featurize_run(
      warm_up, out, args.per_shard,
      ['--pooling', 'avg', '--batch-size', str(args.batch_size),
       '--image-size', str(args.image_size)],
      processes=max(1, args.processes))
  # Several GPUs (a machine of several), after the warm-up run.
  if args.multi_gpu:
    name = 'imagenet' if 'imagenet' in names else names[0]
    counts = sorted({int(n) for n in args.multi_gpu.split(',') if n})
    results = multi_gpu.run(
        patterns[name][large], large, small, args.data, counts,
        args.gpu_processes,
        ['--pooling', 'avg', '--precision', 'bfloat16', '--batch-size',
         str(args.batch_size), '--image-size', str(args.image_size)],
        end_to_end.featurize_run)
    summary['multi_gpu'] = {str(n): r for n, r in results.items()}
    summary['multi_gpu_profile'] = name
    summary['targets'] = [{'target': text, 'pass': passed}
                          for text, passed in multi_gpu.targets(results)]
    for text, passed in multi_gpu.targets(results):
      print(f'{"PASS" if passed else "FAIL"}: {text}', flush=True)
    save()
    return 0
  # Which layout feeds the GPU best, measured first: the profiles' runs
  # then use it (--processes 0). A layout is a worker count, with "s" for
  # a server process that owns the GPU (--large-model).
  layout = (args.processes, args.server, None)
  if args.compare != 'none':
    compared = {}
    compare_images = args.compare_images or small
    pattern = subset(data['imagenet' if 'imagenet' in names else names[0]],
                     os.path.join(args.data, f'compare-{compare_images}'),
                     compare_images, args.per_shard)
    for label in args.compare.split(','):
      count, server, env = parse_layout(label)
      try:
        run = end_to_end.featurize_run(
            pattern, out, compare_images,
            ['--pooling', 'avg', '--precision', 'bfloat16', '--batch-size',
             str(args.batch_size), '--image-size', str(args.image_size)],
            processes=count, server=server, env=env,
            spy=os.path.join(args.out,
                             'spy-' + re.sub(r'[^\w.-]', '_', label))
            if args.spy else None)
      except RuntimeError as e:  # one layout failing says so, no more
        print(f'layout {label} failed: {e}', flush=True)
        compared[label] = {'failed': str(e)[-2000:],
                           'steady_images_per_s': None}
        continue
      compared[label] = {
          'steady_images_per_s': end_to_end.steady(run),
          'all_busy_images_per_s': run.get('all_busy_images_per_s'),
          'all_busy_window_s': run.get('all_busy_window_s'),
          'per_process_images_per_s': run['per_process_images_per_s'],
          'cores_by_thread': run['cores_by_thread'],
          'images_per_s_after_first_record':
              end_to_end.after_first_record_rate(run),
          'host_peak_rss_mib': run['host_peak_rss_mib'],
          'gpu_memory_peak_mib': run['gpu_memory_peak_mib'],
          'gpu_utilisation_percent': run['gpu_utilisation_percent'],
          'host_time_per_batch': run['host_time_per_batch'],
          'host_time_per_image': run['host_time_per_image'],
          'gpu_sharing': run.get('gpu_sharing')}
      summary['layouts_compared'] = {
          'profile': 'imagenet' if 'imagenet' in names else names[0],
          'images': compare_images, 'pooling': 'avg', 'rates': compared}
      save()
    if args.compare_only:
      return 0
    if args.processes == 0:
      # A layout's own speed: while all its processes run (start-up is
      # staggered by tens of seconds with 8); the 20-90 % slope where a
      # run is too short for that.
      best = max(compared, key=lambda c: compared[c].get(
          'all_busy_images_per_s') or compared[c]['steady_images_per_s'] or 0)
      layout = parse_layout(best)
  processes, server, layout_env = max(1, layout[0]), layout[1], layout[2]
  summary['layout'] = {'processes': processes, 'server': server,
                       'environment': best if layout_env else None}
  print(f'end to end with {processes} worker process(es)'
        f'{" and a GPU server process" if server else ""}', flush=True)

  for name in [] if args.models_only else names:
    entry = summary['profiles'][name]
    poolings = ['avg'] + (['none'] if name in none_profiles else [])
    for pooling in poolings:
      extra = ['--pooling', pooling, '--precision', 'bfloat16',
               '--batch-size', str(args.batch_size), '--image-size',
               str(args.image_size)]
      try:
        few, many = _profile_runs(args, patterns[name], out, extra,
                                  processes, server, layout_env)
      except RuntimeError as e:
        # One profile failing is a result too: the others still run.
        first = str(e).splitlines()[0]
        print(f'{name} {pooling} failed: {e}', flush=True)
        entry.setdefault('failed', {})[pooling] = str(e)[-3000:]
        targets.append((f'{name} {pooling}: the run completes ({first})',
                        False))
        save()
        continue
      # The headline: the large run's progress slope. The two sizes'
      # difference is kept beside it, but start-up times vary by seconds
      # from run to run, which that difference takes for images.
      rate = end_to_end.steady(many) or end_to_end.steady_rate(few, many)
      if not args.one_run:
        entry.setdefault('two_size_difference_images_per_s', {})[pooling] = {
            'bfloat16': end_to_end.steady_rate(few, many)}
      entry.setdefault('all_busy_images_per_s', {})[pooling] = {
          'bfloat16': many.get('all_busy_images_per_s')}
      entry.setdefault('after_first_record_images_per_s', {})[pooling] = {
          'bfloat16': end_to_end.after_first_record_rate(many)}
      entry.setdefault('runs', {})[pooling] = {'bfloat16': [few, many]}
      entry.setdefault('end_to_end_images_per_s', {})[pooling] = {
          'bfloat16': rate}
      entry.setdefault('routed', many['routed'])
      entry.setdefault('time_per_image_us', {})[pooling] = {
          'bfloat16': end_to_end.where_time_goes(many, args.batch_size, rate)}
      label = f'{name} {pooling}'
      if pooling in ceilings:
        ratio = round(rate / ceilings[pooling], 3)
        entry.setdefault('ceiling_images_per_s', {})[pooling] = {
            'bfloat16': ceilings[pooling]}
        entry.setdefault('end_to_end_ratio', {})[pooling] = {
            'bfloat16': ratio}
        want = RATIO_TARGETS.get((name, pooling))
        if want is not None:
          targets.append((f'{label}: end to end >= {want} x the ceiling '
                          f'({rate:.0f} / {ceilings[pooling]:.0f} = '
                          f'{ratio:.3f})', ratio >= want))
      if name == 'uniform' and pooling == 'avg':
        targets.append((f'{label}: no slower than before ({rate:.0f} vs '
                        f'{UNIFORM_BEFORE:.0f} images/s, run 5)',
                        rate >= UNIFORM_BEFORE))
      grew = many['host_peak_rss_mib'] / few['host_peak_rss_mib']
      targets.append((f'{label}: host RSS flat from {few["images"]} to '
                      f'{many["images"]} images '
                      f'({few["host_peak_rss_mib"]} -> '
                      f'{many["host_peak_rss_mib"]} MiB, x{grew:.2f} <= 1.10)',
                      grew <= 1.10))
      if few['gpu_memory_peak_mib'] and many['gpu_memory_peak_mib']:
        gpu_grew = many['gpu_memory_peak_mib'] / few['gpu_memory_peak_mib']
        targets.append((f'{label}: GPU memory flat ('
                        f'{few["gpu_memory_peak_mib"]} -> '
                        f'{many["gpu_memory_peak_mib"]} MiB, '
                        f'x{gpu_grew:.2f} <= 1.10)', gpu_grew <= 1.10))
      save()

  if 'imagenet' in names:
    for model in [m for m in args.models.split(',') if m]:
      targets.extend(_model_run(args, model, patterns['imagenet'], out,
                                (processes, server, layout_env), summary))
      save()

  if args.profile_run:
    summary['profile'] = profile(
        patterns[names[0]][small], os.path.join(args.data, 'out-profile'),
        ['--pooling', 'avg', '--precision', 'bfloat16', '--batch-size',
         str(args.batch_size)])
  summary['targets'] = [{'target': t, 'pass': ok} for t, ok in targets]
  save()
  for target, ok in targets:
    print(f'{"PASS" if ok else "FAIL"}  {target}')
  print(json.dumps({name: {k: summary['profiles'][name].get(k) for k in (
      'end_to_end_images_per_s', 'end_to_end_ratio', 'routed')}
                    for name in names}, indent=1))
  return 0 if all(ok for _, ok in targets) else 1


if __name__ == '__main__':
  sys.exit(main())
