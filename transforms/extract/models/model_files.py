"""``--model FILE.keras``: a user's own Keras model.

Any functional model saved with ``model.save('my.keras')`` whose one
input is an RGB image: a fine-tuned VGG16, a ResNet with a new head, a
network of one's own. Layers are chosen by the file's own names.

The launcher reads the file once (``describe_file``): its sha256 and
size, which every worker's copy must match, and whether Keras can load
it, refusing before any image is read a file that has a custom layer
whose code is missing, several inputs, or an input that is not an image.
The square input's side comes from the file's input shape; a model whose
input leaves the size open takes ``--image-size``, and is rebuilt at that
size (``keras.models.clone_model``) so that every shape is known.

How pixels become its input (``--preprocess``) is not in a Keras file;
the user gives it, or the archive records it in an entry
``featurize.json`` holding ``{"preprocess": "caffe"}`` (docs/models.md).
"""
import functools
import json
import zipfile
from typing import NamedTuple, Optional

from transforms.extract import quiet_import
from transforms.extract.models import catalog, weight_files
from transforms.extract.models.model_config import ModelConfig

RECORD_ENTRY = 'featurize.json'


class ModelFile(NamedTuple):
  """What the launcher learnt of a model file.

  Attributes:
    sha256: The file's sha256.
    size: Its size in bytes.
    input_size: The side of its square input; 0 where it leaves it open.
    preprocess: The preprocessing its archive records, or ''.
  """
  sha256: str
  size: int
  input_size: int
  preprocess: str


def _recorded_preprocess(path: str) -> str:
  try:
    with zipfile.ZipFile(path) as archive:
      if RECORD_ENTRY not in archive.namelist():
        return ''
      recorded = json.loads(archive.read(RECORD_ENTRY)).get('preprocess', '')
  except (zipfile.BadZipFile, ValueError, AttributeError):
    return ''
  if recorded not in catalog.PREPROCESS_MODES:
    raise ValueError(f'{RECORD_ENTRY} in the model file records preprocess '
                     f'{recorded!r}, not one of {catalog.PREPROCESS_MODES}')
  return recorded


def _load(path: str, source: str):
  import keras  # pylint: disable=import-outside-toplevel
  try:
    return keras.saving.load_model(path, compile=False)
  except Exception as e:  # pylint: disable=broad-except
    text = str(e)
    missing = text.split("Could not locate class '", 1)
    if len(missing) == 2:
      name = missing[1].split("'", 1)[0]
      reason = (f'its layer class {name!r} is custom, and its code is not '
                'here (featurize loads standard Keras layers only)')
    else:
      reason = f'{type(e).__name__}: {text.splitlines()[0][:300]}'
    raise ValueError(f'cannot load model file {source}: {reason}') from e


def _input_side(model, source: str) -> int:
  """The side of the model's square RGB input; 0 where it is open."""
  if len(model.inputs) != 1:
    raise ValueError(f'model file {source} has {len(model.inputs)} inputs; '
                     'featurize feeds a model one image input')
  shape = tuple(model.inputs[0].shape)
  if len(shape) != 4 or shape[-1] != 3:
    raise ValueError(f'model file {source}: its input {shape} is not an '
                     'RGB image (batch, height, width, 3)')
  height, width = shape[1:3]
  if height != width:
    raise ValueError(f'model file {source}: its input is {height}x{width}; '
                     'featurize makes square inputs (height = width, or '
                     'both open)')
  return int(height or 0)


def describe_file(source: str, image_size: int = 0) -> ModelFile:
  """Reads a model file at launch and checks that featurize can run it.

  Args:
    source: Its path or URL.
    image_size: ``--image-size``, if given (0 otherwise).

  Raises:
    FileNotFoundError: no such file.
    ValueError: it is not a ``.keras`` archive, Keras cannot load it (the
      reason says why), it does not take one square RGB image, or
      ``image_size`` is missing for a model whose input size is open or
      differs from a fixed one.
  """
  quiet_import.keras_ready()
  sha256, size = weight_files.inspect_file(
      source, weight_files.ZIP_SIGNATURE, 'model file',
      'a Keras .keras model file (not a zip archive)')
  local = weight_files.local_copy(
      weight_files.Expected(source, sha256, size, 'model file'),
      ModelConfig.weights_cache_dir)
  model = _load(local, source)
  side = _input_side(model, source)
  if side and image_size and image_size != side:
    raise ValueError(f'model file {source} takes {side}x{side} input; '
                     f'--image-size {image_size} does not fit it')
  if not side and not image_size:
    raise ValueError(f'model file {source} leaves its input size open; '
                     'give --image-size')
  return ModelFile(sha256, size, side, _recorded_preprocess(local))


def load(config: ModelConfig):
  """The file's model at the configuration's image size and precision
  (``load_at``)."""
  return load_at(config.model, config.model_sha256, config.model_size,
                 config.image_size, config.precision,
                 config.weights_cache_dir)


def load_at(source: str, sha256: Optional[str], size: Optional[int],
            image_size: int, precision: str = 'float32',
            cache_dir: str = ModelConfig.weights_cache_dir):
  """A model file's model at ``image_size`` and ``precision``, its
  weights loaded, from this machine's checked copy. Call inside
  ``keras_build.building``.

  A model whose input size is open is rebuilt on a fixed-size input, and
  a bfloat16 run rebuilds every layer under Keras's ``mixed_bfloat16``
  policy (a file records float32 layers); the weights are copied over.
  """
  import keras  # pylint: disable=import-outside-toplevel
  local = weight_files.local_copy(
      weight_files.Expected(source, sha256, size, 'model file'), cache_dir)
  model = _load(local, source)
  fixed = tuple(model.inputs[0].shape)[1] == image_size
  if fixed and precision == 'float32':
    return model

  def clone_layer(layer):
    settings = layer.get_config()
    if precision == 'bfloat16':
      settings['dtype'] = 'mixed_bfloat16'
    return layer.__class__.from_config(settings)

  rebuilt = keras.models.clone_model(
      model, input_tensors=keras.Input((image_size, image_size, 3)),
      clone_function=clone_layer)
  rebuilt.set_weights(model.get_weights())
  return rebuilt


@functools.lru_cache(maxsize=8)
def _describe_cached(source: str, image_size: int) -> ModelFile:
  return describe_file(source, image_size)


def configure(source: str, image_size: int = 0,
              preprocess: str = '') -> dict:
  """The ``ModelConfig`` fields a model file sets: its sha256 and size,
  its input size and its preprocessing (given, else recorded).

  Raises:
    ValueError: as ``describe_file``.
  """
  described = _describe_cached(source, image_size)
  return {'model': source, 'model_sha256': described.sha256,
          'model_size': described.size,
          'image_size': image_size or described.input_size,
          'preprocess': preprocess or described.preprocess}
