"""``ModelConfig``: which model, which of its layers, and how it runs."""
import dataclasses
import os
import tempfile
from typing import Optional, Tuple

from transforms.extract.backend import DEVICES
from transforms.extract.gpu.settings import GpuSettings
from transforms.extract.models import catalog

POOLINGS = ('none', 'avg', 'max')
PRECISIONS = ('float32', 'bfloat16')
# Batch defaults per device: small batches keep a CPU worker's memory
# low; a GPU needs a few hundred images a call to be busy (docs/gpu.md).
DEFAULT_BATCH_SIZE = {'cpu': 16, 'gpu': 256}
DEFAULT_MAX_BATCH_BYTES = {'cpu': 1 << 30, 'gpu': 8 << 30}
# Precision defaults per device. On a GPU, true float32 runs VGG16 at
# about a tenth of bfloat16's speed for features within cosine 0.9999 of
# float32's (docs/gpu.md), so gpu takes bfloat16 unless told otherwise; on
# CPUs float32 stays the default (bfloat16 pays only where the CPU has AMX
# or avx512_bf16). The manifest and a refresh's fingerprint record the
# precision, so a dataset never mixes the two.
DEFAULT_PRECISION = {'cpu': 'float32', 'gpu': 'bfloat16'}


@dataclasses.dataclass(frozen=True)
class Anatomy:
  """What the model's graph says about a configuration, learnt once at
  launch from the model built without weights (``anatomy.anatomy_of``),
  so that workers never rebuild it to plan.

  Attributes:
    layers: The requested layers, in the model's order.
    poolings: Each layer's pooling, in the same order.
    feature_shapes: Each layer's feature shape for one image, pooled.
    include_top: Whether a requested layer lies in the classifier top.
    peak_values: The most activation values one image holds at once
      during a pass (a layer's inputs, its output, and every tensor a
      later layer still needs), kept outputs aside.
    kept_values: Values of the kept outputs but the deepest, which stay
      alive until the pass ends.
    parameters: The parameters of the model that is built.
    weighted_layers: Its layers that hold weights (each costs the
      runtime some state: ``pipeline/memory_plan.py``).
    key: The configuration it describes: model, image size, and the
      canonical layer and pooling strings (``ModelConfig.anatomy_key``).
  """
  layers: Tuple[str, ...]
  poolings: Tuple[str, ...]
  feature_shapes: Tuple[Tuple[int, ...], ...]
  include_top: bool
  peak_values: int
  kept_values: int
  parameters: int
  weighted_layers: int = 0
  key: Tuple = ()


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Which features to extract and how the model runs.

  Attributes:
    model: A model of ``keras.applications`` by name, any case
      (``catalog.NAMED_MODELS``; kept in lower case), or the path /
      ``gs://`` URL of a Keras model file (``.keras``; ``model_files``).
    weights: ``imagenet`` (Keras cache or download), ``random`` (seeded, for
      tests and demos), or a path / ``gs://`` URL of the model's official
      Keras weight file; empty for a model file, which holds its own.
    weights_sha256: Expected sha256 of a weight file; checked after the
      per-worker copy. Filled in by the launcher.
    weights_size: Expected size in bytes of a weight file (a cheap first
      check before the sha256). Filled in by the launcher.
    model_sha256: A model file's sha256, likewise.
    model_size: A model file's size in bytes, likewise.
    layer: The model's layer whose output is the feature, or several
      joined by ``,`` (one forward pass gives each); empty for the model's
      feature layer, the output of its convolutional base. ``resolve``
      puts them in the model's order, so that the same set always reads
      the same.
    pooling: ``none``, ``avg`` or ``max`` over the spatial axes: one for
      every layer, or one per layer joined by ``,`` (``poolings``).
    precision: ``float32`` or ``bfloat16`` (Keras ``mixed_bfloat16``).
    image_size: Side of the square input; 0 for a named model's own (a
      model file's comes from its input shape: ``model_files``).
    preprocess: How pixels become the model's input
      (``catalog.PREPROCESS_MODES``); empty for a named model's own (a
      model file needs it given, or recorded in the file).
    batch_size: Images per model call (upper bound).
    max_batch_bytes: Upper bound on the activation memory of one batch;
      lowers the batch size when needed (see ``effective_batch_size``).
    large_model: One model per machine shared by all worker processes
      (on gpu: one server process per machine owns the GPUs,
      ``transforms/extract/gpu/server.py``),
      instead of one per process.
    weights_cache_dir: Local folder for per-worker copies of remote weights.
    seed: Seed of the ``random`` weights (same on every worker).
    device: ``cpu`` (Keras on TensorFlow, Pillow decoding) or ``gpu``
      (Keras on JAX, nvJPEG decoding; ``transforms/extract/gpu``).
    gpu: How the GPU path uses a worker process's threads (measured
      defaults; ``transforms/extract/gpu/settings.py``).
    anatomy: What the model's graph says of this configuration; filled in
      by ``anatomy.resolve`` at launch.
  """
  model: str = catalog.DEFAULT_MODEL
  weights: str = 'imagenet'
  weights_sha256: Optional[str] = None
  weights_size: Optional[int] = None
  model_sha256: Optional[str] = None
  model_size: Optional[int] = None
  layer: str = ''
  pooling: str = 'none'
  precision: str = 'float32'
  image_size: int = 0
  preprocess: str = ''
  batch_size: int = 16
  max_batch_bytes: int = 1024 * 1024 * 1024
  large_model: bool = False
  weights_cache_dir: str = os.path.join(tempfile.gettempdir(),
                                        'featurize-weights')
  seed: int = 0
  device: str = 'cpu'
  gpu: GpuSettings = GpuSettings()
  anatomy: Optional[Anatomy] = None

  def __post_init__(self):
    if self.is_file:
      self._check_file()
    else:
      named = catalog.find(self.model)
      object.__setattr__(self, 'model', named.name)
      if not self.image_size:
        object.__setattr__(self, 'image_size', named.input_size)
      if not self.preprocess:
        object.__setattr__(self, 'preprocess', named.preprocess)
    if self.preprocess not in catalog.PREPROCESS_MODES:
      raise ValueError(f'preprocess must be one of '
                       f'{catalog.PREPROCESS_MODES}, not {self.preprocess!r}')
    if self.device not in DEVICES:
      raise ValueError(f'device must be one of {DEVICES}')
    layers = self.requested_layers
    if len(set(layers)) != len(layers):
      raise ValueError(f'--layer names a layer twice: {self.layer!r}')
    poolings = tuple(name.strip() for name in self.pooling.split(','))
    if any(p not in POOLINGS for p in poolings):
      raise ValueError(f'pooling must be one of {POOLINGS}')
    if len(poolings) not in (1, max(1, len(layers))):
      raise ValueError(f'--pooling takes one value or one per layer '
                       f'({len(layers)}), not {len(poolings)}')
    if self.precision not in PRECISIONS:
      raise ValueError(f'precision must be one of {PRECISIONS}')
    if self.image_size < 32:
      raise ValueError('the image size must be at least 32')
    if self.batch_size < 1:
      raise ValueError('batch size must be at least 1')

  def _check_file(self):
    if self.weights == 'imagenet':  # the default: the file's own
      object.__setattr__(self, 'weights', '')
    if self.weights:
      raise ValueError(f'--model {self.model} holds its own weights; '
                       f'--weights {self.weights} does not apply to it')
    if not self.preprocess:
      raise ValueError(
          f'--model {self.model} needs --preprocess caffe, tf, torch or '
          'none: how the model expects its pixels (a model file does not '
          'say, unless it records it: docs/models.md)')
    if not self.image_size:
      raise ValueError(f'--model {self.model}: the image size is not known '
                       '(model_files.describe_file reads it from the file)')

  @property
  def is_file(self) -> bool:
    """Whether the model is a model file rather than a named model."""
    return not catalog.is_named(self.model)

  @property
  def named(self) -> catalog.NamedModel:
    """The model's catalog entry.

    Raises:
      ValueError: the model is a model file.
    """
    return catalog.find(self.model)

  @property
  def display_name(self) -> str:
    """The model as the manifest and the console name it: Keras's name of
    a named model (``ResNet50``), a model file's name."""
    if self.is_file:
      return os.path.basename(self.model)
    return self.named.keras_name

  @property
  def requested_layers(self) -> Tuple[str, ...]:
    """The layers as given, in the given order; empty for the default."""
    return tuple(name.strip() for name in self.layer.split(',')
                 if name.strip())

  @property
  def resolved(self) -> Anatomy:
    """The anatomy; a configuration made by the launcher has it, others
    get it built once per process (``anatomy.anatomy_of``)."""
    if self.anatomy is not None and self.anatomy.key == self.anatomy_key:
      return self.anatomy
    from transforms.extract.models import anatomy  # pylint: disable=import-outside-toplevel
    return anatomy.anatomy_of(self)

  @property
  def anatomy_key(self) -> Tuple:
    """What the anatomy depends on."""
    return (self.model, self.image_size, self.layer, self.pooling)

  @property
  def layers(self) -> Tuple[str, ...]:
    """The kept layers, in the model's order."""
    return self.resolved.layers

  @property
  def poolings(self) -> Tuple[str, ...]:
    """Each layer's pooling, in the order of ``layers``."""
    return self.resolved.poolings

  @property
  def multi_layer(self) -> bool:
    """Whether the run keeps more than one layer (records then name each
    layer's feature: ``example_codec``)."""
    return len(self.layers) > 1

  @property
  def needs_top(self) -> bool:
    """Whether a requested layer lies in the classifier top."""
    return self.resolved.include_top

  @property
  def official_weights_file(self) -> Optional[str]:
    """Name of the official weight file this configuration needs (None
    for a model file)."""
    if self.is_file:
      return None
    return self.named.official_weights_file(self.needs_top)
