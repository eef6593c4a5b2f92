"""``featurize models`` and ``featurize layers``: what each model offers
and what each of its layers costs, before a run.

``featurize models`` lists the named models: input size, feature layer
(the default ``--layer``), parameters, preprocessing, and whether this
machine's Keras cache holds their ImageNet weights.

``featurize layers MODEL`` builds the model once without weights and
lists every layer: its output shape for one image, that output's bytes at
the precision, and what a batch at the device's default size holds at
its peak if the model is cut there (``models.activation_bytes``: the
bound ``--max-batch-bytes`` applies). It answers "which layer can I
afford?" before any image is read.
"""
import argparse
import functools
import os
import sys
from typing import List, NamedTuple, Optional, Sequence

from transforms.extract import backend, models
from transforms.extract.models import anatomy, catalog


class LayerCost(NamedTuple):
  """One layer of a model and what choosing it costs.

  Attributes:
    name: What ``--layer`` takes.
    shape: Its output for one image.
    output_bytes: That output's bytes at the precision.
    batch_bytes: A batch's peak activations when the model is cut here.
  """
  name: str
  shape: tuple
  output_bytes: int
  batch_bytes: int


def layer_costs(model: str, image_size: int = 0, precision: str = 'float32',
                batch_size: int = models.DEFAULT_BATCH_SIZE['cpu']
                ) -> List[LayerCost]:
  """Every layer of ``model`` (convolutional base, then its top where the
  image size is the model's own), in the model's order.

  Raises:
    ValueError: an unknown model, or a size the model refuses.
  """
  named = catalog.find(model)
  size = image_size or named.input_size
  value_bytes = models.batch_memory.value_bytes(precision)
  top = size == named.input_size
  # The shapes are the same on every backend: the table is built on the
  # CPU's, whichever device's batch size is costed.
  table = anatomy.model_table(named.name, size, top)
  costs = []
  for i, row in enumerate(table.rows):
    peak = anatomy.peak_values(table.rows[:i + 1])
    costs.append(LayerCost(row.name, row.shape, row.values * value_bytes,
                           peak * value_bytes * batch_size))
  return costs


def _size(value: int) -> str:
  for unit, scale in (('GiB', 1 << 30), ('MiB', 1 << 20), ('KiB', 1 << 10)):
    if value >= scale:
      return f'{value / scale:.1f} {unit}'
  return f'{value} B'


def _cached(named: catalog.NamedModel) -> str:
  files = [f for f in (named.weights_file_notop, named.weights_file)
           if os.path.isfile(models.keras_cache_path(f))]
  if not files:
    return 'no'
  return 'yes' if named.weights_file_notop in files else 'top only'


def models_lines() -> List[str]:
  """The table ``featurize models`` prints."""
  rows = [('model', 'input', 'feature layer', 'parameters', 'preprocess',
           'imagenet cached')]
  for named in catalog.NAMED_MODELS.values():
    rows.append((named.name, str(named.input_size), named.feature_layer,
                 f'{named.parameters / 1e6:.1f} M', named.preprocess,
                 _cached(named)))
  return _aligned(rows) + [
      '', f'imagenet weights are cached in '
      f'{os.path.dirname(models.keras_cache_path("x"))}; `featurize layers '
      'MODEL` lists a model\'s layers.']


def layers_lines(model: str, image_size: int, precision: str,
                 batch_size: int) -> List[str]:
  """The table ``featurize layers`` prints."""
  named = catalog.find(model)
  size = image_size or named.input_size
  rows = [('layer', 'output shape', f'{precision} / image',
           f'batch of {batch_size}, cut here')]
  for cost in layer_costs(model, size, precision, batch_size):
    mark = '  <- default' if cost.name == named.feature_layer else ''
    rows.append((cost.name, 'x'.join(str(d) for d in cost.shape),
                 _size(cost.output_bytes), _size(cost.batch_bytes) + mark))
  return [f'{named.keras_name} at {size}x{size}, {precision}: '
          f'{len(rows) - 1} layers'] + _aligned(rows)


def _aligned(rows: Sequence[Sequence[str]]) -> List[str]:
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  return ['  '.join(cell.ljust(width) for cell, width in zip(row, widths))
          .rstrip() for row in rows]


def register(commands) -> None:
  """Adds ``models`` and ``layers`` to the console script's commands."""
  listing = commands.add_parser(
      'models', help='The named models: input size, feature layer, '
      'parameters, and whether their ImageNet weights are cached here.')
  listing.set_defaults(handler=functools.partial(main, 'models'))
  layers = commands.add_parser(
      'layers', help='Every layer of a model: its output shape, and the '
      'memory an image and a batch need if the model is cut there.')
  layers.add_argument('model', help='A model name (featurize models).')
  layers.add_argument('--image-size', '--image_size', type=int, default=0,
                      help='Side of the square input (default: the '
                      'model\'s own).')
  layers.add_argument('--precision', choices=models.PRECISIONS,
                      default='float32')
  layers.add_argument('--device', choices=backend.DEVICES, default='cpu',
                      help='Whose default batch size to cost.')
  layers.add_argument('--batch-size', '--batch_size', type=int,
                      help='Images a batch (default: the device\'s).')
  layers.set_defaults(handler=functools.partial(main, 'layers'))


def main(command: str, argv: Optional[Sequence[str]],
         parser: argparse.ArgumentParser) -> int:
  """Runs ``featurize models`` or ``layers``; returns the exit status."""
  args = parser.parse_args(argv)
  try:
    if command == 'models':
      lines = models_lines()
    else:
      lines = layers_lines(
          args.model, args.image_size, args.precision,
          args.batch_size or models.DEFAULT_BATCH_SIZE[args.device])
  except ValueError as e:
    print(f'featurize {command}: error: {e}', file=sys.stderr)
    return 2
  print('\n'.join(lines))
  return 0
