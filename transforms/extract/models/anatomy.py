"""What a model's graph says about a configuration, without its weights.

The launcher builds the chosen model once without weights (a few seconds
for the largest) and reads from its graph what planning needs: which
layers exist and in what order, the shape of each kept output, how many
activation values one image holds at most during a pass, and how many
parameters the model has. ``resolve`` records it in the configuration
(``ModelConfig.anatomy``), so that workers never rebuild the model to
plan a batch.
"""
import ctypes
import dataclasses
import difflib
import functools
import gc
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from transforms.extract import quiet_import
from transforms.extract.models import catalog, keras_build, model_files
from transforms.extract.models.model_config import Anatomy, ModelConfig


class LayerRow(NamedTuple):
  """One layer of a model's graph, in the model's order.

  Attributes:
    name: The layer's name (what ``--layer`` takes).
    shape: Its output's shape for one image.
    inputs: Ids of the tensors it reads.
    outputs: Ids of the tensors it makes, with their values per image.
  """
  name: str
  shape: Tuple[int, ...]
  inputs: Tuple[int, ...]
  outputs: Tuple[Tuple[int, int], ...]

  @property
  def values(self) -> int:
    """Values of its output for one image."""
    return int(np.prod(self.shape))


class ModelTable(NamedTuple):
  """A model's layers and parameters at one input size.

  Attributes:
    rows: Its layers, in the model's order.
    parameters: Its parameters.
    weighted_layers: Its layers that hold weights.
  """
  rows: Tuple[LayerRow, ...]
  parameters: int
  weighted_layers: int

  def positions(self) -> Dict[str, int]:
    """Each layer's position, by name."""
    return {row.name: i for i, row in enumerate(self.rows)}


def _flat(tensors) -> List:
  import keras  # pylint: disable=import-outside-toplevel
  return [t for t in keras.tree.flatten(tensors) if t is not None]


def _table_of(model) -> ModelTable:
  rows = []
  for layer in model.layers:
    try:
      inputs = _flat(layer.input) if layer.__class__.__name__ != (
          'InputLayer') else []
    except (AttributeError, ValueError):
      inputs = []
    outputs = _flat(layer.output)
    shape = tuple(int(d) for d in outputs[0].shape[1:])
    rows.append(LayerRow(
        layer.name, shape, tuple(id(t) for t in inputs),
        tuple((id(t), int(np.prod(t.shape[1:]))) for t in outputs)))
  return ModelTable(tuple(rows), int(model.count_params()),
                    sum(1 for layer in model.layers if layer.weights))


@functools.lru_cache(maxsize=16)
def model_table(model: str, image_size: int, include_top: bool,
                device: str = 'cpu', sha256: Optional[str] = None,
                size: Optional[int] = None) -> ModelTable:
  """Every layer of ``model`` at ``image_size``: a named model built
  without weights, or a model file (``sha256`` and ``size`` what the
  launcher read of it).

  Shapes are the same on every backend: a process that already runs
  Keras (a test, a worker) reads them with it; the launcher imports it on
  the device's backend, as its workers will.

  Raises:
    ValueError: Keras refuses the input size (too small for the model).
  """
  quiet_import.keras_ready(device)
  with keras_build.building():
    if catalog.is_named(model):
      built = keras_build.construct(catalog.find(model), include_top,
                                    image_size)
    else:
      built = model_files.load_at(model, sha256, size, image_size)
    try:
      return _table_of(built)
    finally:
      del built
      _release_freed_memory()


def _release_freed_memory() -> None:
  """Gives the memory of a model built only to read its graph back to the
  system.

  Its variables (a VGG19's 80 MB) are freed with it, but glibc's malloc
  keeps freed memory in the process, and a local run's workers share the
  launcher's process: measured, the worker then peaked that much higher
  than planned. glibc's ``malloc_trim`` returns it; Python has no call of
  its own for this. Elsewhere (no glibc) nothing is done.
  """
  gc.collect()
  try:
    ctypes.CDLL('libc.so.6').malloc_trim(0)
  except (OSError, AttributeError):
    pass


def peak_values(rows: Sequence[LayerRow]) -> int:
  """The most activation values alive at once when ``rows`` run in order.

  A tensor is alive from the layer that makes it to the last layer that
  reads it; while a layer runs, its inputs and its outputs are alive, and
  so is every tensor a later layer still needs (a residual branch's
  input). Outputs nothing reads stay alive to the end.
  """
  last_use = {}
  for i, row in enumerate(rows):
    for tensor in row.inputs:
      last_use[tensor] = i
  alive: Dict[int, int] = {}
  peak = 0
  for i, row in enumerate(rows):
    for tensor, values in row.outputs:
      alive[tensor] = values
    peak = max(peak, sum(alive.values()))
    for tensor in row.inputs:
      if last_use.get(tensor) == i:
        alive.pop(tensor, None)
  return peak


def _pooled(shape: Tuple[int, ...], pooling: str) -> Tuple[int, ...]:
  return shape if pooling == 'none' else shape[-1:]


def _unknown(name: str, model: str, table: ModelTable) -> ValueError:
  known = [row.name for row in table.rows]
  close = difflib.get_close_matches(name, known, n=3)
  hint = f' (did you mean {", ".join(close)}?)' if close else ''
  if catalog.is_named(model):
    return ValueError(
        f'unknown {catalog.find(model).keras_name} layer {name!r}{hint}; '
        f'`featurize layers {model}` lists them')
  return ValueError(f'model file {model} has no layer {name!r}{hint}; its '
                    f'layers: {", ".join(known)}')


def anatomy_of(config: ModelConfig) -> Anatomy:
  """The anatomy of ``config`` (cached per model, size, layers and
  pooling).

  Raises:
    ValueError: an unknown layer, pooling on a layer without spatial axes,
      top layers at another size than the model's own, or an input size
      the model refuses.
  """
  return _anatomy(config.model, config.image_size, config.layer,
                  config.pooling, config.device, config.model_sha256,
                  config.model_size)


@functools.lru_cache(maxsize=64)
def _anatomy(model: str, image_size: int, layer: str, pooling: str,
             device: str, sha256: Optional[str],
             size: Optional[int]) -> Anatomy:
  base = model_table(model, image_size, False, device, sha256, size)
  requested = tuple(name.strip() for name in layer.split(',')
                    if name.strip()) or (base.rows[-1].name,)
  table = base
  if catalog.is_named(model) and any(name not in base.positions()
                                     for name in requested):
    named = catalog.find(model)
    if image_size != named.input_size:
      missing = [n for n in requested if n not in base.positions()][0]
      raise ValueError(
          f'{missing!r} is not a layer of {named.keras_name}\'s '
          f'convolutional base; its top layers need {named.input_size}x'
          f'{named.input_size} input, not {image_size}')
    table = model_table(model, image_size, True, device)
  index = table.positions()
  for name in requested:
    if name not in index:
      raise _unknown(name, model, table)
  poolings = tuple(p.strip() for p in pooling.split(','))
  if len(poolings) == 1:
    poolings *= len(requested)
  pairs = sorted(zip(requested, poolings), key=lambda p: index[p[0]])
  layers = tuple(name for name, _ in pairs)
  shapes = []
  for name, pool in pairs:
    shape = table.rows[index[name]].shape
    if pool != 'none' and len(shape) != 3:
      raise ValueError(f'--pooling applies to layers with a spatial '
                       f'output (height x width x channels), not {name!r}')
    shapes.append(_pooled(shape, pool))
  deepest = index[layers[-1]]
  return Anatomy(
      layers=layers, poolings=tuple(p for _, p in pairs),
      feature_shapes=tuple(shapes), include_top=table is not base,
      peak_values=peak_values(table.rows[:deepest + 1]),
      kept_values=sum(int(np.prod(s)) for s in shapes[:-1]),
      parameters=table.parameters,
      weighted_layers=table.weighted_layers,
      key=(model, image_size, ','.join(layers),
           _canonical_pooling(tuple(p for _, p in pairs))))


def _canonical_pooling(poolings: Tuple[str, ...]) -> str:
  distinct = set(poolings)
  return distinct.pop() if len(distinct) == 1 else ','.join(poolings)


def resolve(config: ModelConfig) -> ModelConfig:
  """``config`` with its anatomy, its layers in the model's order and one
  pooling value where they agree: the canonical form that the manifest
  and a refresh's fingerprint read, so that the same set of outputs
  always reads the same.

  Raises:
    ValueError: as ``anatomy_of``.
  """
  anatomy = anatomy_of(config)
  return dataclasses.replace(config, layer=anatomy.key[2],
                             pooling=anatomy.key[3], anatomy=anatomy)
