"""``featurize inspect --plot``: a sample of the features in 2-D, beside
the errors by type.

The sample is the first records of each feature file, with the budget
spread evenly over the files (``plan_sample``): it reads about as many
records as it keeps, so a plot of a dataset of millions costs seconds, and
every file is represented. It is not a uniform sample (a file's first
records are those of the input shards its bundle read first); reservoir
sampling would be, but it reads every record: a full pass over the
output for one picture.

The projection is PCA by numpy's SVD of the centred sample. matplotlib is
imported only by ``draw``, with the Agg backend (no display needed).
"""
from typing import (Callable, Iterable, List, NamedTuple, Optional, Sequence,
                    Tuple)

import numpy as np

from pipeline import read_features
from pipeline.inspection.summary import (FAILED, SUCCEEDED, UNFINISHED,
                                         FileCount, Summary, count_of)

LEGEND_CLASSES = 20
NO_LABEL_COLOUR = '#9a9a9a'
ONE_COLOUR = '#2f6f9f'
STAGE_COLOURS = {'read': '#d95f02', 'decode': '#7570b3',
                 'inference': '#e7298a'}
OTHER_STAGE_COLOUR = '#666666'
STATUS_LABELS = {SUCCEEDED: ('succeeded', '#2e8b57'),
                 FAILED: ('FAILED: too many errors', '#c0392b'),
                 UNFINISHED: ('UNFINISHED', '#d68910')}
ERROR_BARS = 15
# Pixels of the PNG: 14 x 6.5 inches at 100 dpi.
FIGURE_INCHES = (14, 6.5)
DPI = 100


class FeatureSample(NamedTuple):
  """Features sampled from an output.

  Attributes:
    features: ``float32`` array ``(n, d)``: each record flattened.
    labels: The n records' labels (None where a record has none).
    keys: The n records' keys.
    files_read: How many feature files the sample came from.
  """
  features: np.ndarray
  labels: List[Optional[object]]
  keys: List[str]
  files_read: int


class Projection(NamedTuple):
  """Points projected on the first two principal components.

  Attributes:
    coords: ``(n, 2)`` coordinates.
    explained: Share of the sample's variance along each component.
  """
  coords: np.ndarray
  explained: np.ndarray


class ColourPlan(NamedTuple):
  """How points are coloured by their labels.

  Attributes:
    classes: The distinct labels, sorted (ints numerically, others by
      text); empty when no record has a label.
    index: Per point, its class's position in ``classes``, or -1 for a
      point without a label.
    colormap: The matplotlib colormap the classes are drawn from.
    legend: Whether there are few enough classes for a legend.
  """
  classes: List[object]
  # (A field named like tuple.index, which mypy sees as a clash.)
  index: np.ndarray  # type: ignore[assignment]
  colormap: str
  legend: bool


def plotted(features, deepest: str = '') -> np.ndarray:
  """The values a plot projects: a record's array, or for a record of
  several layers the deepest one's (``deepest``, the last of the
  manifest's layers; else the record's last)."""
  if isinstance(features, dict):
    return features[deepest if deepest in features else list(features)[-1]]
  return features


def plan_sample(records: Sequence[int], size: int) -> List[int]:
  """How many records to take from the start of each file.

  Spreads ``size`` evenly over the files (a file with fewer records gives
  all it has and the others share the rest); when fewer records are left
  than files, one record each from files spaced evenly across the list.

  Args:
    records: The record count of each file.
    size: How many records to take in all (at most).

  Returns:
    Per file, how many records to take.
  """
  take = [0] * len(records)
  remaining = min(size, sum(records))
  open_files = [i for i, count in enumerate(records) if count > 0]
  while remaining > 0:
    share = remaining // len(open_files)
    if share == 0:
      step = len(open_files) / remaining
      for j in range(remaining):
        take[open_files[int(j * step)]] += 1
      break
    for i in open_files:
      added = min(share, records[i] - take[i])
      take[i] += added
      remaining -= added
    open_files = [i for i in open_files if take[i] < records[i]]
  return take


def sample_features(
    files: Sequence[FileCount], size: int,
    read_file: Callable[[str], Iterable[read_features.Features]] = (
        read_features.iter_file),
    deepest: str = '') -> FeatureSample:
  """Reads the first records of each file, as ``plan_sample`` says.

  Memory holds the sample only: one ``(size, d)`` array, filled in place.

  Args:
    files: Feature files (full paths) with their record counts.
    size: How many records to keep at most.
    read_file: Yields one file's records (``read_features.iter_file``).
    deepest: Of records of several layers, the one plotted (``plotted``).
  """
  take = plan_sample([f.records for f in files], size)
  features: Optional[np.ndarray] = None
  labels: List[Optional[object]] = []
  keys: List[str] = []
  files_read = 0
  for file, count in zip(files, take):
    if not count:
      continue
    files_read += 1
    for record in read_file(file.path):
      values = plotted(record.features, deepest)
      if features is None:
        features = np.empty((sum(take), values.size), np.float32)
      features[len(keys)] = values.reshape(-1)
      labels.append(record.label)
      keys.append(record.key)
      count -= 1
      if not count:
        break
  if features is None:
    features = np.empty((0, 0), np.float32)
  return FeatureSample(features[:len(keys)], labels, keys, files_read)


def pca_2d(features: np.ndarray) -> Projection:
  """Projects points on their first two principal components.

  Centres the points and takes numpy's SVD. Each component's sign is
  chosen so that its largest loading is positive, which makes the picture
  the same from run to run. With fewer than two components' worth of
  points or dimensions, the missing coordinates are 0.

  Args:
    features: ``(n, d)`` points.

  Returns:
    Coordinates ``(n, 2)`` and the share of variance along each.
  """
  x = np.asarray(features, dtype=np.float64)
  n = x.shape[0]
  coords = np.zeros((n, 2))
  explained = np.zeros(2)
  if n < 2 or x.shape[1] == 0:
    return Projection(coords, explained)
  centred = x - x.mean(axis=0)
  u, s, vt = np.linalg.svd(centred, full_matrices=False)
  k = min(2, len(s))
  for i in range(k):
    if vt[i, np.argmax(np.abs(vt[i]))] < 0:
      u[:, i], vt[i] = -u[:, i], -vt[i]
  coords[:, :k] = u[:, :k] * s[:k]
  total = float(np.sum(s ** 2))
  if total > 0:
    explained[:k] = s[:k] ** 2 / total
  return Projection(coords, explained)


def _label_order(label) -> tuple:
  """Integers in numeric order, then other labels by their text."""
  if isinstance(label, int):
    return (0, label, '')
  return (1, 0, label_text(label, limit=None))


def label_text(label, limit: Optional[int] = 24) -> str:
  """A label for people: bytes decoded, long ones cut to ``limit``."""
  if isinstance(label, bytes):
    label = label.decode('utf-8', 'replace')
  text = str(label)
  return text if limit is None or len(text) <= limit else (
      text[:limit - 1] + '…')


def colour_plan(labels: Sequence[object]) -> ColourPlan:
  """Which class each point is, and the colormap the classes use:
  qualitative (``tab10``, ``tab20``) up to 20 classes, then a continuous
  one (``turbo``) in class order, without a legend."""
  classes = sorted({label for label in labels if label is not None},
                   key=_label_order)
  position = {label: i for i, label in enumerate(classes)}
  index = np.array([-1 if label is None else position[label]
                    for label in labels],
                   dtype=np.int64)
  if len(classes) <= 10:
    colormap = 'tab10'
  elif len(classes) <= LEGEND_CLASSES:
    colormap = 'tab20'
  else:
    colormap = 'turbo'
  return ColourPlan(classes, index, colormap,
                    0 < len(classes) <= LEGEND_CLASSES)


def class_colours(plan: ColourPlan) -> np.ndarray:
  """RGBA ``(len(classes), 4)``: the colour of each class."""
  import matplotlib
  colormap = matplotlib.colormaps[plan.colormap]
  n = len(plan.classes)
  if plan.colormap == 'turbo':
    return colormap(np.linspace(0.05, 0.95, max(n, 1)))[:n]
  return colormap(np.arange(n) % colormap.N)


def header_lines(summary: Summary) -> List[str]:
  """The heading's lines under the path: counts, then model and weights."""
  if summary.errors is None:  # A dataset with no version yet.
    return [summary.status_detail]
  share = summary.error_share
  counts = count_of(summary.features, 'feature')
  if summary.images_in is not None:
    counts += f' from {count_of(summary.images_in, "image")}'
  counts += f', {count_of(summary.errors, "error")}' + (
      f' ({share:.1%})' if share is not None else '')
  if summary.kind == 'leftovers':
    counts += ' so far (no manifest: counted in the files left behind)'
  if not summary.model:
    return [counts]
  m = summary.model
  return [f'{counts}   ·   {m.model} {m.layer}, {m.pooling} pooling, '
          f'{m.precision}, {m.image_size}px {m.resize.split(" ")[0]}',
          f'weights {m.weights}']


def badge(summary: Summary) -> Tuple[str, str]:
  """The status label of the heading and its colour."""
  label, colour = STATUS_LABELS[summary.status]
  if summary.version:
    latest = summary.version.version == summary.version.latest
    label = 'LATEST' if latest else f'not the latest ({summary.version.latest})'
  return label, colour


def _draw_header(fig, summary: Summary) -> None:
  head = summary.path + (f'   {summary.version.version}'
                         if summary.version else '')
  path_text = fig.text(0.04, 0.955, head, fontsize=13, fontweight='bold',
                       va='baseline')
  label, colour = badge(summary)
  # Placed after the path, whatever its length: offset from its box.
  fig.add_artist(_status_badge(f'  {label}  ', path_text, colour))
  lines = header_lines(summary)
  fig.text(0.04, 0.915, lines[0], fontsize=11, va='baseline')
  if len(lines) > 1:
    fig.text(0.04, 0.88, lines[1], fontsize=9.5, color='#555555',
             va='baseline')


def _status_badge(text: str, anchor, colour: str):
  """A white-on-colour label just right of ``anchor`` (a Text)."""
  from matplotlib.text import Annotation
  return Annotation(text, xy=(1, 0), xycoords=anchor, xytext=(10, 0),
                    textcoords='offset points', va='baseline', fontsize=10,
                    fontweight='bold', color='white',
                    bbox=dict(boxstyle='round,pad=0.25', facecolor=colour,
                              edgecolor='none'))


def _colourbar(ax, plan: ColourPlan) -> None:
  """A colourbar for many classes, ticked with a few class names."""
  import matplotlib
  n = len(plan.classes)
  mappable = matplotlib.cm.ScalarMappable(
      norm=matplotlib.colors.Normalize(-0.5, n - 0.5),
      cmap=matplotlib.colors.ListedColormap(class_colours(plan)))
  bar = ax.figure.colorbar(mappable, ax=ax, fraction=0.05, pad=0.02)
  ticks = sorted({int(round(t)) for t in np.linspace(0, n - 1, 6)})
  bar.set_ticks(ticks, labels=[label_text(plan.classes[t]) for t in ticks])
  bar.set_label(f'label ({n} classes)')


def _draw_scatter(ax, sample: FeatureSample,
                  summary: Summary) -> Optional[Projection]:
  if not len(sample.keys):
    ax.text(0.5, 0.5, 'no features to draw' + (
        '\n(the run wrote no manifest)' if summary.kind == 'leftovers'
        else ''), ha='center', va='center', fontsize=13, color='#555555',
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title('features', fontsize=11)
    return None
  projection = pca_2d(sample.features)
  plan = colour_plan(sample.labels)
  x, y = projection.coords[:, 0], projection.coords[:, 1]
  size = 60 if len(x) <= 100 else 25 if len(x) <= 1000 else 12
  style = dict(s=size, alpha=0.85, linewidths=0.4, edgecolors='white')
  unlabelled = plan.index < 0
  if not plan.classes:
    ax.scatter(x, y, color=ONE_COLOUR, **style)
    colouring = 'no labels'
  else:
    if unlabelled.any():
      # Hollow, so that no class colour (tab10 has a grey) is taken for it.
      ax.scatter(x[unlabelled], y[unlabelled], s=size, facecolors='none',
                 edgecolors=NO_LABEL_COLOUR, linewidths=1.2,
                 label='no label')
    colours = class_colours(plan)
    if plan.legend:  # One call per class, for the legend's entries.
      for i, label in enumerate(plan.classes):
        chosen = plan.index == i
        ax.scatter(x[chosen], y[chosen], color=colours[i],
                   label=label_text(label), **style)
    else:
      ax.scatter(x[~unlabelled], y[~unlabelled],
                 c=colours[plan.index[~unlabelled]], **style)
    colouring = f'coloured by label: {len(plan.classes)} classes'
    if plan.legend:
      ax.legend(title='label', fontsize=8, title_fontsize=9,
                loc='upper left', bbox_to_anchor=(1.01, 1.0),
                frameon=False)
    else:
      _colourbar(ax, plan)
      if unlabelled.any():  # The colourbar is where the legend would be.
        ax.legend(fontsize=8, loc='best', framealpha=0.9)
  ax.set_xlabel(f'PC1 ({projection.explained[0]:.0%} of the sample\'s '
                'variance)')
  ax.set_ylabel(f'PC2 ({projection.explained[1]:.0%})')
  ax.set_title(f'features: PCA of a sample of {len(x):,} ({colouring})',
               fontsize=11)
  ax.grid(True, color='#eeeeee', linewidth=0.8)
  ax.set_axisbelow(True)
  return projection


def _draw_errors(ax, summary: Summary) -> None:
  import matplotlib.patches
  import matplotlib.ticker
  groups = list(summary.error_groups)
  lines = count_of(summary.error_lines_read, 'line')
  ax.set_title(f'errors by type ({lines})', fontsize=11)
  if not groups:
    ax.text(0.5, 0.5, 'no errors', ha='center', va='center', fontsize=15,
            color=STATUS_LABELS[SUCCEEDED][1], transform=ax.transAxes)
    ax.set_axis_off()
    return
  shown, rest = groups[:ERROR_BARS], groups[ERROR_BARS:]
  names = [g.error_type for g in shown]
  counts = [g.count for g in shown]
  colours = [STAGE_COLOURS.get(g.stage, OTHER_STAGE_COLOUR) for g in shown]
  if rest:
    names.append(f'{len(rest)} other types')
    counts.append(sum(g.count for g in rest))
    colours.append(OTHER_STAGE_COLOUR)
  positions = np.arange(len(names))
  ax.barh(positions, counts, color=colours, height=0.7)
  ax.set_yticks(positions, names, fontsize=9)
  # As many rows as a full chart has, so that a few bars stay thin.
  ax.set_ylim(max(len(names), 8) - 0.5, -0.5)
  top = max(counts)
  for position, count in zip(positions, counts):
    ax.text(count + top * 0.01, position, f'{count:,}', va='center',
            fontsize=9)
  ax.set_xlim(0, top * 1.15)
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.set_xlabel('error lines')
  for spine in ('top', 'right'):
    ax.spines[spine].set_visible(False)
  stages = sorted({g.stage for g in shown})
  ax.legend(handles=[matplotlib.patches.Patch(
      color=STAGE_COLOURS.get(s, OTHER_STAGE_COLOUR), label=s)
                     for s in stages], title='stage', fontsize=8,
            title_fontsize=9, loc='lower right', frameon=False)


def draw(path: str, summary: Summary,
         sample: FeatureSample) -> Optional[Projection]:
  """Writes the PNG: a heading, the sample's PCA (left) and the errors
  by type (right).

  Returns:
    The projection drawn, or None where the sample is empty.
  """
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig = plt.figure(figsize=FIGURE_INCHES, dpi=DPI)
  grid = fig.add_gridspec(1, 2, width_ratios=(1.55, 1), wspace=0.42,
                          left=0.06, right=0.97, top=0.79, bottom=0.1)
  _draw_header(fig, summary)
  projection = _draw_scatter(fig.add_subplot(grid[0]), sample, summary)
  _draw_errors(fig.add_subplot(grid[1]), summary)
  fig.savefig(path, dpi=DPI)
  plt.close(fig)
  return projection
