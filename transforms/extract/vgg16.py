"""VGG16 as a feature extractor: configuration, weights and model building.

Keras 3 on TensorFlow. The model is cut at the deepest requested layer, so
the activations of later layers are never computed, and it returns only
the requested layers' outputs: every other activation is freed as soon as
the next layer has run. Several layers come from one forward pass
(``--layer block3_pool,block4_pool,block5_pool``).
"""
import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from transforms.extract.backend import DEVICES
from transforms.extract.gpu.settings import GpuSettings

CONV_LAYERS = (
    'block1_conv1', 'block1_conv2', 'block1_pool',
    'block2_conv1', 'block2_conv2', 'block2_pool',
    'block3_conv1', 'block3_conv2', 'block3_conv3', 'block3_pool',
    'block4_conv1', 'block4_conv2', 'block4_conv3', 'block4_pool',
    'block5_conv1', 'block5_conv2', 'block5_conv3', 'block5_pool',
)
TOP_LAYERS = ('flatten', 'fc1', 'fc2', 'predictions')
LAYERS = CONV_LAYERS + TOP_LAYERS
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
# or avx512_bf16). The manifest and a refresh's
# fingerprint record the precision, so a dataset never mixes the two.
DEFAULT_PRECISION = {'cpu': 'float32', 'gpu': 'bfloat16'}

# The official Keras weight files (keras.applications.vgg16).
WEIGHTS_BASE_URL = ('https://storage.googleapis.com/tensorflow/'
                    'keras-applications/vgg16/')
WEIGHTS_FILE_TOP = 'vgg16_weights_tf_dim_ordering_tf_kernels.h5'
WEIGHTS_FILE_NOTOP = 'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'

# Keras's dtype policy is process-global; builds hold this lock while they
# switch it, so that two threads never build under each other's policy.
_POLICY_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Which features to extract and how the model runs.

  Attributes:
    weights: ``imagenet`` (Keras cache or download), ``random`` (seeded, for
      tests), or a path / ``gs://`` URL of an official Keras weight file.
    weights_sha256: Expected sha256 of a weight file; checked after the
      per-worker copy. Filled in by the launcher.
    weights_size: Expected size in bytes of a weight file (a cheap first
      check before the sha256). Filled in by the launcher.
    layer: VGG16 layer whose output is the feature, or several joined by
      ``,`` (one forward pass gives each). Kept in VGG16's order, so that
      the same set always reads the same (``layers``).
    pooling: ``none``, ``avg`` or ``max`` over the spatial axes: one for
      every layer, or one per layer joined by ``,`` (``poolings``).
    precision: ``float32`` or ``bfloat16`` (Keras ``mixed_bfloat16``).
    image_size: Side of the square input.
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
  """
  weights: str = 'imagenet'
  weights_sha256: Optional[str] = None
  weights_size: Optional[int] = None
  layer: str = 'block5_pool'
  pooling: str = 'none'
  precision: str = 'float32'
  image_size: int = 224
  batch_size: int = 16
  max_batch_bytes: int = 1024 * 1024 * 1024
  large_model: bool = False
  weights_cache_dir: str = os.path.join(tempfile.gettempdir(),
                                        'featurize-weights')
  seed: int = 0
  device: str = 'cpu'
  gpu: GpuSettings = GpuSettings()

  def __post_init__(self):
    if self.device not in DEVICES:
      raise ValueError(f'device must be one of {DEVICES}')
    layers = tuple(name.strip() for name in self.layer.split(','))
    unknown = [name for name in layers if name not in LAYERS]
    if unknown:
      raise ValueError(f'unknown VGG16 layer {unknown[0]!r}; choose one of '
                       f'{", ".join(LAYERS)}')
    if len(set(layers)) != len(layers):
      raise ValueError(f'--layer names a layer twice: {self.layer!r}')
    poolings = tuple(name.strip() for name in self.pooling.split(','))
    if any(p not in POOLINGS for p in poolings):
      raise ValueError(f'pooling must be one of {POOLINGS}')
    if len(poolings) not in (1, len(layers)):
      raise ValueError(f'--pooling takes one value or one per layer '
                       f'({len(layers)}), not {len(poolings)}')
    if len(poolings) == 1:
      poolings *= len(layers)
    # The canonical form: VGG16's order, one pooling value if they agree.
    # The manifest and a refresh's fingerprint read these strings, so the
    # same set of outputs always gives the same fingerprint.
    pairs = sorted(zip(layers, poolings), key=lambda p: LAYERS.index(p[0]))
    object.__setattr__(self, 'layer', ','.join(layer for layer, _ in pairs))
    distinct = {p for _, p in pairs}
    object.__setattr__(self, 'pooling', distinct.pop() if len(distinct) == 1
                       else ','.join(p for _, p in pairs))
    for name, pooling in pairs:
      if name in TOP_LAYERS and pooling != 'none':
        raise ValueError(f'--pooling applies to convolutional layers, not '
                         f'{name!r}')
    if self.precision not in PRECISIONS:
      raise ValueError(f'precision must be one of {PRECISIONS}')
    if self.needs_top and self.image_size != 224:
      raise ValueError('the fully connected layers need 224x224 input')
    if self.batch_size < 1:
      raise ValueError('batch size must be at least 1')

  @property
  def layers(self) -> Tuple[str, ...]:
    """The requested layers, in VGG16's order."""
    return tuple(self.layer.split(','))

  @property
  def poolings(self) -> Tuple[str, ...]:
    """Each layer's pooling, in the order of ``layers``."""
    values = tuple(self.pooling.split(','))
    return values * len(self.layers) if len(values) == 1 else values

  @property
  def multi_layer(self) -> bool:
    """Whether the run keeps more than one layer (records then name each
    layer's feature: ``example_codec``)."""
    return len(self.layers) > 1

  @property
  def needs_top(self) -> bool:
    """Whether a requested layer lies in the fully connected top."""
    return any(name in TOP_LAYERS for name in self.layers)

  @property
  def official_weights_file(self) -> str:
    """Name of the official weight file this configuration needs."""
    return WEIGHTS_FILE_TOP if self.needs_top else WEIGHTS_FILE_NOTOP


def activation_bytes(config: ModelConfig) -> int:
  """The largest activations one image holds during a pass.

  The largest activations of VGG16 are those of block 1: two tensors of
  ``image_size^2 x 64`` values alive at once (a conv layer's input and
  output), 2 bytes a value in bfloat16, 4 in float32. With several layers,
  each kept output but the deepest stays alive until the pass ends, beside
  the later activations, so it counts too.
  """
  value_bytes = 2 if config.precision == 'bfloat16' else 4
  per_image = 2 * config.image_size * config.image_size * 64 * value_bytes
  shapes = feature_shapes(config)
  for name in config.layers[:-1]:
    per_image += int(np.prod(shapes[name])) * value_bytes
  return per_image


def effective_batch_size(config: ModelConfig) -> int:
  """Batch size after applying the ``max_batch_bytes`` bound to
  ``activation_bytes`` an image."""
  return max(1, min(config.batch_size,
                    config.max_batch_bytes // activation_bytes(config)))


def to_model_input(pixels: Sequence[np.ndarray]) -> np.ndarray:
  """Stacks RGB ``uint8`` images into VGG16's preprocessed float input."""
  from keras.applications import vgg16
  batch = np.stack(pixels).astype(np.float32)
  return vgg16.preprocess_input(batch)


def sha256_of(path: str) -> str:
  """sha256 of a file on any Beam filesystem, read in chunks."""
  return inspect_weight_file(path, check_format=False)[0]


# The first bytes of every HDF5 file (Keras's .h5 weight files).
HDF5_SIGNATURE = b'\x89HDF\r\n\x1a\n'


def inspect_weight_file(path: str,
                        check_format: bool = True) -> Tuple[str, int]:
  """Reads a weight file once, on any Beam filesystem.

  Returns:
    Its sha256 and its size in bytes.

  Raises:
    FileNotFoundError: there is no such file.
    ValueError: it cannot be read (the reason is in the message), or it is
      not an HDF5 file although ``check_format`` asks for one.
  """
  from apache_beam.io.filesystems import CompressionTypes, FileSystems
  if not FileSystems.exists(path):
    raise FileNotFoundError(f'weight file not found: {path}')
  digest, size, head = hashlib.sha256(), 0, b''
  try:
    with FileSystems.open(
        path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      for chunk in iter(lambda: f.read(8 * 1024 * 1024), b''):
        if not size:
          head = chunk[:len(HDF5_SIGNATURE)]
        digest.update(chunk)
        size += len(chunk)
  except Exception as e:  # pylint: disable=broad-except
    # Any filesystem's failure (permission, network, ...) becomes one clear
    # error before a single image is read.
    raise ValueError(f'cannot read weight file {path}: '
                     f'{type(e).__name__}: {e}') from e
  if check_format and head != HDF5_SIGNATURE:
    raise ValueError(f'{path} is not a Keras .h5 weight file (no HDF5 '
                     'signature)')
  return digest.hexdigest(), size


def _matches(path: str, config: ModelConfig) -> bool:
  """Whether a local file has the size and sha256 the launcher recorded."""
  if config.weights_size is not None and (
      os.path.getsize(path) != config.weights_size):
    return False
  return not config.weights_sha256 or sha256_of(path) == config.weights_sha256


def local_weights_copy(config: ModelConfig) -> str:
  """Returns a local path of the weight file, copying it once if remote.

  The copy lands in ``weights_cache_dir`` under its sha256 (or name) and is
  renamed into place only when complete. An exclusive lock on the cache
  folder makes the worker processes of one machine (one per vCPU on
  Dataflow) wait for a single download instead of each fetching hundreds
  of MB; later loads reuse the copy after checking its size and sha256.

  Raises:
    FileNotFoundError: the weight file does not exist.
    ValueError: the file or its copy does not match what the launcher
      recorded (``weights_size``, ``weights_sha256``).
  """
  from apache_beam.io.filesystems import CompressionTypes, FileSystems
  source = config.weights
  if '://' not in source:
    if not os.path.isfile(source):
      raise FileNotFoundError(f'weight file not found: {source}')
    if not _matches(source, config):
      raise ValueError(f'weight file {source} changed since the launch '
                       '(size or sha256 mismatch)')
    return source
  name = os.path.basename(source)
  folder = os.path.join(config.weights_cache_dir,
                        config.weights_sha256 or 'unverified')
  target = os.path.join(folder, name)
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, '.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if os.path.isfile(target) and _matches(target, config):
      return target
    if not FileSystems.exists(source):
      raise FileNotFoundError(f'weight file not found: {source}')
    handle, partial = tempfile.mkstemp(dir=folder, suffix='.partial')
    try:
      with os.fdopen(handle, 'wb') as out, FileSystems.open(
          source, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        shutil.copyfileobj(f, out, 8 * 1024 * 1024)
      if not _matches(partial, config):
        raise ValueError(f'copy of {source} does not match the size and '
                         f'sha256 the launcher recorded '
                         f'({config.weights_sha256})')
      os.replace(partial, target)
    finally:
      if os.path.exists(partial):  # a failed or refused copy
        os.remove(partial)
  return target


def _weight_file_layers(path: str) -> Tuple[str, ...]:
  import h5py
  with h5py.File(path, 'r') as f:
    group = f['model_weights'] if 'model_weights' in f else f
    names = group.attrs.get('layer_names', [])
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _set_random_weights(model, seed: int) -> None:
  """He-normal kernels, zero biases, from a seeded numpy generator.

  Done by hand rather than with Keras initialisers so that every worker
  gets bit-identical weights whatever Keras's global seed state is.
  """
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    weights = layer.get_weights()
    if not weights:
      continue
    kernel, bias = weights
    fan_in = int(np.prod(kernel.shape[:-1]))
    kernel = rng.standard_normal(kernel.shape, dtype=np.float32)
    kernel *= np.float32(np.sqrt(2.0 / fan_in))
    layer.set_weights([kernel, np.zeros_like(bias)])


@contextlib.contextmanager
def _dtype_policy(name: str):
  import keras
  with _POLICY_LOCK:
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
      yield
    finally:
      keras.config.set_dtype_policy(previous)


def keras_cache_path(file_name: str) -> str:
  """Where Keras keeps a downloaded application weight file."""
  root = os.environ.get('KERAS_HOME',
                        os.path.join(os.path.expanduser('~'), '.keras'))
  return os.path.join(root, 'models', file_name)


def _build_imagenet(config: ModelConfig):
  import keras
  try:
    return keras.applications.VGG16(
        include_top=config.needs_top, weights='imagenet',
        input_shape=(config.image_size, config.image_size, 3))
  except Exception as e:
    raise RuntimeError(
        f'Could not load the ImageNet weights of VGG16 ({e}). Download '
        f'{WEIGHTS_BASE_URL}{config.official_weights_file} and place it at '
        f'{keras_cache_path(config.official_weights_file)}, or pass '
        f'--weights /path/to/{config.official_weights_file}.') from e


def build_feature_model(config: ModelConfig):
  """Builds VGG16 with its weights, cut at the deepest of ``config.layers``,
  each output pooled.

  Returns:
    A Keras model mapping preprocessed ``(n, size, size, 3)`` float input
    to ``(n, ...)`` features; with several layers, to a list of them in
    the order of ``config.layers``.
  """
  import keras
  policy = 'mixed_bfloat16' if config.precision == 'bfloat16' else 'float32'
  with _dtype_policy(policy):
    if config.weights == 'imagenet':
      base = _build_imagenet(config)
    else:
      base = keras.applications.VGG16(
          include_top=config.needs_top, weights=None,
          input_shape=(config.image_size, config.image_size, 3))
      if config.weights == 'random':
        _set_random_weights(base, config.seed)
      else:
        path = local_weights_copy(config)
        in_file = set(_weight_file_layers(path))
        needed = [layer.name for layer in base.layers if layer.weights]
        missing = [n for n in needed if n not in in_file]
        if missing:
          raise ValueError(
              f'weight file {config.weights} lacks layers {missing}; layer '
              f'{config.layer!r} needs {config.official_weights_file}')
        base.load_weights(path, by_name=True)
    outputs = []
    for name, pooling in zip(config.layers, config.poolings):
      output = base.get_layer(name).output
      # One name a pooled output (Keras wants them unique); 'pool' alone
      # for a single layer, as before.
      pool_name = f'{name}_pool' if config.multi_layer else 'pool'
      if pooling == 'avg':
        output = keras.layers.GlobalAveragePooling2D(name=pool_name)(output)
      elif pooling == 'max':
        output = keras.layers.GlobalMaxPooling2D(name=pool_name)(output)
      outputs.append(output)
    # A functional model computes only what its outputs need: the layers
    # after the deepest requested one are never run.
    model = keras.Model(base.input,
                        outputs if config.multi_layer else outputs[0],
                        name=f'vgg16_{config.layers[-1]}')
  logging.info('Built VGG16 to %s (pooling %s, %s, weights %s)', config.layer,
               config.pooling, config.precision, config.weights)
  return model


def layer_shape(layer: str, pooling: str,
                image_size: int) -> Tuple[int, ...]:
  """Shape of one image's output of ``layer`` after ``pooling``."""
  if layer in ('fc1', 'fc2'):
    return (4096,)
  if layer == 'predictions':
    return (1000,)
  if layer == 'flatten':
    return (7 * 7 * 512,)
  block = int(layer[5])
  channels = (64, 128, 256, 512, 512)[block - 1]
  side = image_size // 2**(block - 1)
  if layer.endswith('pool'):
    side //= 2
  if pooling != 'none':
    return (channels,)
  return (side, side, channels)


def feature_shapes(config: ModelConfig) -> Dict[str, Tuple[int, ...]]:
  """Each requested layer's feature shape, computed without the model."""
  return {name: layer_shape(name, pooling, config.image_size)
          for name, pooling in zip(config.layers, config.poolings)}


def feature_shape(config: ModelConfig) -> Tuple[int, ...]:
  """Shape of one image's features for a single-layer configuration.

  Raises:
    ValueError: the configuration keeps several layers (``feature_shapes``).
  """
  if config.multi_layer:
    raise ValueError(f'{config.layer!r} is several layers: feature_shapes')
  return layer_shape(config.layer, config.pooling, config.image_size)
