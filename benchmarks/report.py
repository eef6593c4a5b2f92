"""Targets (PASS/FAIL), the Markdown table and the plots of a benchmark."""
import json
import os
from typing import Dict, List


def _speed(summary, label):
  entry = summary['throughput'].get(label)
  return entry['images_per_s'] if entry else None


def _peak_cell(summary, table: str, name: str, key) -> str:
  """Median peak RSS, with the range of the repeats when there were several."""
  for k in (key, str(key)):
    value = summary['memory'][table].get(name, {}).get(k)
    if value is not None:
      break
  else:
    return ''
  runs = summary['memory'].get('runs', {}).get(table, {}).get(name, {})
  peaks = runs.get(key) or runs.get(str(key)) or []
  if len(peaks) > 1:
    return f'{value:.0f} ({min(peaks):.0f}-{max(peaks):.0f})'
  return f'{value:.0f}'


def targets(summary: dict) -> List[dict]:
  """Each target of the benchmark issue with its measured value."""
  result = []
  for precision in ('float32', 'bfloat16'):
    ours = _speed(summary, f'featurize {precision}')
    ceiling = _speed(summary, f'bare {precision}')
    ratio = ours / ceiling if ours and ceiling else 0.0
    result.append({
        'target': f'throughput {precision} >= 0.9 x bare-model ceiling',
        'value': f'{ratio:.2f} x ({ours:.1f} vs {ceiling:.1f} images/s)',
        'pass': ratio >= 0.9})
  by_count = summary['memory']['by_count']['featurize']
  counts = sorted(by_count, key=int)
  low, high = by_count[counts[0]], by_count[counts[-1]]
  growth = high / low - 1
  result.append({
      'target': f'peak RSS growth {counts[0]} -> {counts[-1]} images <= 5 %',
      'value': f'{growth:+.1%} ({low:.0f} -> {high:.0f} MB)',
      'pass': growth <= 0.05})
  by_res = summary['memory']['by_resolution']['featurize']
  extra = by_res['24mp'] - by_res['imagenet']
  result.append({
      'target': 'peak RSS on 24 MP photos <= ImageNet-sized + 100 MB',
      'value': f'{extra:+.0f} MB ({by_res["imagenet"]:.0f} -> '
               f'{by_res["24mp"]:.0f} MB)',
      'pass': extra <= 100})
  cosine = summary['bfloat16_vs_float32_cosine']
  result.append({
      'target': 'bfloat16 vs float32 cosine similarity >= 0.999 per image',
      'value': f'min {cosine["min"]:.5f}, median {cosine["median"]:.5f} '
               f'over {cosine["images"]} images',
      'pass': cosine['min'] >= 0.999})
  first = summary['throughput']['featurize float32']['time_to_first_record_s']
  result.append({
      'target': 'time to first feature record (reported)',
      'value': f'{first:.1f} s (float32, from process start)'
               if first is not None else 'not observed',
      'pass': True})
  return result


def model_targets(table: Dict[str, dict]) -> List[dict]:
  """Per model: featurize end to end >= 0.9 x the bare model, float32."""
  result = []
  for model, row in table.items():
    ours, ceiling = row['featurize_images_per_s'], row['bare_images_per_s']
    ratio = ours / ceiling if ours and ceiling else 0.0
    result.append({
        'target': f'{model} float32 >= 0.9 x its bare-model ceiling',
        'value': f'{ratio:.2f} x ({ours or 0:.1f} vs {ceiling or 0:.1f} '
                 'images/s)',
        'pass': ratio >= 0.9})
  return result


def markdown(summary: dict) -> str:
  """RESULTS.md: machine, throughput table, memory tables, targets."""
  m = summary['machine']
  lines = ['# Benchmark results', '',
           f'Machine: {m.get("cpu", "?")}, {m.get("cores")} cores, '
           f'{m.get("memory_gb")} GB; flags: {" ".join(m.get("flags", []))}.',
           f'Settings: {summary["settings"]}.', '',
           'Images: ' + '; '.join(
               f'{k} {v["resolution"][0]}x{v["resolution"][1]}, '
               f'{v["mean_kb"]} KB mean'
               for k, v in summary['dataset'].items()), '',
           '## Throughput (images/s, median of the repeats)', '',
           '| contender | images/s | x bare (same precision) | '
           'first record (s) | timed as |', '|---|---|---|---|---|']
  for label, entry in summary['throughput'].items():
    ceiling = _speed(summary, f'bare {entry["precision"]}')
    ratio = entry['images_per_s'] / ceiling if ceiling else float('nan')
    first = entry['time_to_first_record_s']
    lines.append(f'| {label} | {entry["images_per_s"]:.2f} | {ratio:.2f} | '
                 f'{"" if first is None else f"{first:.1f}"} | '
                 f'{entry.get("method", "")} |')
  lines += ['', '## Peak RSS (MB) against the number of images (bfloat16)',
            '', 'Median of the repeats; their range in brackets.', '']
  by_count = summary['memory']['by_count']
  counts = sorted({int(c) for v in by_count.values() for c in v})
  lines += ['| contender | ' + ' | '.join(str(c) for c in counts) + ' |',
            '|---|' + '---|' * len(counts)]
  for name in by_count:
    cells = [_peak_cell(summary, 'by_count', name, c) for c in counts]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  lines += ['', '## Peak RSS (MB) against image resolution (bfloat16, '
            'batch 4)', '', '| contender | ImageNet-sized | 12 MP | 24 MP |',
            '|---|---|---|---|']
  for name in summary['memory']['by_resolution']:
    cells = [_peak_cell(summary, 'by_resolution', name, k)
             for k in ('imagenet', '12mp', '24mp')]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  lines += target_lines(summary['targets'])
  return '\n'.join(lines) + '\n'


def target_lines(targets: List[dict]) -> List[str]:
  """The Markdown "Targets" section: one PASS/FAIL line per target."""
  return ['', '## Targets', ''] + [
      f'- {"PASS" if t["pass"] else "FAIL"}: {t["target"]}: {t["value"]}'
      for t in targets]


def write_results(folder: str, summary: dict, text: str) -> int:
  """Writes ``summary.json`` and ``RESULTS.md``, prints the text; returns
  the exit status (0 when every target passes)."""
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(folder, 'RESULTS.md'), 'w') as f:
    f.write(text)
  print(text)
  return 0 if all(t['pass'] for t in summary['targets']) else 1


def plots(summary: dict, folder: str) -> None:
  """throughput.png, rss_vs_images.png, rss_vs_resolution.png."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  labels = list(summary['throughput'])
  speeds = [summary['throughput'][label]['images_per_s'] for label in labels]
  fig, ax = plt.subplots(figsize=(8, 4))
  ax.barh(labels, speeds, color=['#888' if label.startswith('bare') else
                                 '#2a7' if label.startswith('featurize') else
                                 '#c55' for label in labels])
  ax.set_xlabel('images/s (median)')
  ax.invert_yaxis()
  ax.set_title('VGG16 feature extraction throughput')
  fig.tight_layout()
  fig.savefig(os.path.join(folder, 'throughput.png'), dpi=100)
  plt.close(fig)

  by_count = {name: sorted((int(c), v) for c, v in values.items())
              for name, values in summary['memory']['by_count'].items()}
  _rss_plot(plt, by_count, 'images in the run', 'Peak memory against '
            'dataset size', os.path.join(folder, 'rss_vs_images.png'),
            log_x=True)
  order = ['imagenet', '12mp', '24mp']
  by_resolution = {name: [(k, values[k]) for k in order] for name, values
                   in summary['memory']['by_resolution'].items()}
  _rss_plot(plt, by_resolution, 'image resolution', 'Peak memory against '
            'image resolution', os.path.join(folder, 'rss_vs_resolution.png'),
            log_x=False)


def _rss_plot(plt, series: dict, xlabel: str, title: str, path: str,
              log_x: bool) -> None:
  """One line per contender of (x, peak RSS MB) points."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, points in series.items():
    ax.plot([p[0] for p in points], [p[1] for p in points], 'o-', label=name)
  ax.set_xlabel(xlabel)
  ax.set_ylabel('peak RSS per worker (MB)')
  if log_x:
    ax.set_xscale('log')
  ax.legend()
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
