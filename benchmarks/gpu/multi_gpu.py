"""Several GPUs in one machine: the ``imagenet`` profile on 1, 2, 4... GPUs.

``python -m benchmarks.gpu.run --multi-gpu 1,2,4`` runs featurize end to
end (bfloat16, ``--pooling avg``) on the first N GPUs for each N, with
``--gpu-processes`` worker processes a GPU (``CUDA_VISIBLE_DEVICES`` and
``--direct_num_workers``: featurize spreads them, ``placement``), over the
profile's large size, its memory compared within the run from the small
size on. It records, under ``multi_gpu.<n>`` in ``summary.json``, the
rate (while every process runs), the speedup over one GPU, host RSS and
GPU memory at the small size and the end, and whether the features equal
the one-GPU run's (same keys and error lines, the values' smallest cosine
and largest difference); it prints each target with PASS/FAIL: 2 GPUs at
least 1.8x one, 4 at least 3.5x, memory flat, features equal.
"""
import json
import os
import shutil
from typing import Dict, List, Optional, Tuple

import numpy as np

# The targets: speedup over one GPU, by GPU count.
SPEEDUP_TARGETS = {2: 1.8, 4: 3.5}
# Memory counts as flat within this growth from the small size to the end.
FLAT = 1.10
# Features count as equal above this cosine (bfloat16 on GPUs of one kind;
# XLA may autotune a convolution differently in another process).
MIN_COSINE = 0.9999


def _errors(folder: str) -> List[str]:
  lines = []
  for name in sorted(os.listdir(folder)):
    if name.startswith('errors-'):
      with open(os.path.join(folder, name)) as f:
        lines += [json.dumps(json.loads(line), sort_keys=True) for line in f]
  return sorted(lines)


def _features(folder: str) -> Dict[str, np.ndarray]:
  """Every record's features of a run's folder, flat, by key (all layers,
  in name order). Parsed with whichever ``Example`` class this process can
  load (``example_proto``): the ``tfrecord`` package's cannot share a
  process with TensorFlow's."""
  # pylint: disable=import-outside-toplevel
  from transforms.read import example_proto, tfrecord_framing
  from transforms.write import example_codec
  example_class = example_proto.example_pb2().Example
  out = {}
  for name in sorted(os.listdir(folder)):
    if not name.startswith('features-'):
      continue
    with open(os.path.join(folder, name), 'rb') as f:
      for record in tfrecord_framing.iter_records(f, 1 << 31):
        if record.data is None:
          raise ValueError(f'{name}: {record.message}')
        feature = example_class.FromString(record.data).features.feature
        key = feature['key'].bytes_list.value[0].decode('utf-8')
        values = [np.asarray(feature[k].float_list.value, np.float64)
                  for k in sorted(feature)
                  if k == example_codec.FEATURES_KEY or
                  k.startswith(example_codec.FEATURES_KEY + '/')]
        out[key] = np.concatenate(values) if values else np.zeros(0)
  return out


def compare_outputs(reference: str, other: str) -> dict:
  """How ``other``'s output (a finished run's folder) differs from
  ``reference``'s: keys, error lines, and the features' values.

  Returns:
    ``same_keys``, ``same_error_lines``, ``identical`` (every value equal),
    ``min_cosine`` and ``max_abs_difference`` over the common keys, and
    ``equal``: same keys and error lines and every cosine at least
    ``MIN_COSINE``.
  """
  ours, theirs = _features(reference), _features(other)
  common = sorted(set(ours) & set(theirs))
  cosines, differences, identical = [], [], True
  for key in common:
    a, b = ours[key], theirs[key]
    identical = identical and np.array_equal(a, b)
    differences.append(float(np.max(np.abs(a - b))) if a.size else 0.0)
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    cosines.append(float(a @ b / norm) if norm else float(
        np.array_equal(a, b)))
  same_keys = set(ours) == set(theirs)
  same_errors = _errors(reference) == _errors(other)
  smallest = min(cosines) if cosines else None
  return {'same_keys': same_keys, 'same_error_lines': same_errors,
          'identical': bool(identical and same_keys),
          'min_cosine': smallest,
          'max_abs_difference': max(differences) if differences else None,
          'equal': bool(same_keys and same_errors and (
              smallest is None or smallest >= MIN_COSINE))}


def speedups(rates: Dict[int, Optional[float]]) -> Dict[int, Optional[float]]:
  """Each GPU count's rate over one GPU's."""
  one = rates.get(1)
  return {n: (round(rate / one, 3) if rate and one else None)
          for n, rate in rates.items()}


def targets(results: Dict[int, dict]) -> List[Tuple[str, bool]]:
  """``(target, passed)`` for each GPU count: its speedup where the issue
  sets one, memory flat per GPU, features equal to one GPU's."""
  out = []
  for n, result in sorted(results.items()):
    speedup = result.get('speedup')
    if n in SPEEDUP_TARGETS:
      out.append((f'{n} GPUs >= {SPEEDUP_TARGETS[n]}x one GPU '
                  f'({speedup}x)',
                  speedup is not None and speedup >= SPEEDUP_TARGETS[n]))
    for name in ('host_peak_rss_mib', 'gpu_memory_peak_mib'):
      before, after = result.get(f'{name}_small'), result.get(name)
      if before and after:
        out.append((f'{n} GPUs: {name} flat ({before} -> {after}, '
                    f'x{after / before:.2f} <= {FLAT})',
                    after / before <= FLAT))
    compared = result.get('against_one_gpu')
    if compared is not None:
      out.append((f'{n} GPUs: features equal to one GPU\'s (keys '
                  f'{compared["same_keys"]}, error lines '
                  f'{compared["same_error_lines"]}, min cosine '
                  f'{compared["min_cosine"]})', compared['equal']))
  return out


def run(pattern: str, images: int, memory_from: int, data: str,
        gpu_counts: List[int], processes_per_gpu: int, extra: List[str],
        featurize_run) -> Dict[int, dict]:
  """Runs each GPU count; returns ``multi_gpu``'s entries by count.

  Args:
    pattern: The ``imagenet`` shards of ``images`` images.
    images: How many.
    memory_from: Compare memory from this many images on.
    data: A folder for the kept outputs.
    gpu_counts: GPU counts (1 first, for the speedups and features).
    processes_per_gpu: Worker processes a GPU.
    extra: featurize's flags (pooling, precision, batch size...).
    featurize_run: ``end_to_end.featurize_run``.
  """
  results, kept = {}, {}
  for n in sorted(gpu_counts):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=','.join(
        str(g) for g in range(n)))
    out = os.path.join(data, f'multi-gpu-{n}-out')
    keep = os.path.join(data, f'multi-gpu-{n}-kept')
    measured = featurize_run(pattern, out, images, extra, env=env,
                             processes=n * processes_per_gpu,
                             memory_from=memory_from, keep=keep)
    until = measured.get('memory_until') or {}
    results[n] = {
        'gpus': n, 'processes': n * processes_per_gpu,
        'images_per_s': measured.get('all_busy_images_per_s') or
                        measured.get('steady_images_per_s'),
        'steady_images_per_s': measured.get('steady_images_per_s'),
        'host_peak_rss_mib': measured.get('host_peak_rss_mib'),
        'gpu_memory_peak_mib': measured.get('gpu_memory_peak_mib'),
        'host_peak_rss_mib_small': until.get('host_peak_rss_mib'),
        'gpu_memory_peak_mib_small': until.get('gpu_memory_peak_mib'),
        'cores_by_thread': measured.get('cores_by_thread'),
        'gpu_sharing': measured.get('gpu_sharing')}
    kept[n] = keep
  for n, speedup in speedups({n: r['images_per_s']
                              for n, r in results.items()}).items():
    results[n]['speedup'] = speedup
  if 1 in kept:
    for n in results:
      if n != 1:
        results[n]['against_one_gpu'] = compare_outputs(kept[1], kept[n])
  for folder in kept.values():
    shutil.rmtree(folder, ignore_errors=True)
  return results
