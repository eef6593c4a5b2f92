"""Typed elements that flow between the pipeline's stages.

Every input image becomes exactly one ``FeatureRecord`` or one
``ErrorRecord``; the small bookkeeping records (``ShardRead``,
``ShardWritten``) let the final step prove that nothing was lost.
"""
from typing import Dict, List, NamedTuple, Optional, Union

import numpy as np

# A label passes through unchanged: an integer class (``.cls``, int64
# feature) or raw bytes (``.json``, bytes feature).
Label = Optional[Union[int, bytes]]
# One image's features: the array of the one layer a run keeps, or, when
# it keeps several (``--layer a,b``), a dict of them by layer name.
Features = Union[np.ndarray, Dict[str, np.ndarray]]


def features_per_image(outputs, count: int) -> List[Features]:
  """A batch's model outputs as its first ``count`` images' features.

  Args:
    outputs: One ``(n, ...)`` array (a single layer), or a dict of them by
      layer name (several), as the CPU and GPU models return them; any
      array-like, copied to float32 host arrays.
    count: Images in the batch (later rows are padding).
  """
  if isinstance(outputs, dict):
    arrays = {layer: np.asarray(values, dtype=np.float32)[:count]
              for layer, values in outputs.items()}
    return [{layer: values[i] for layer, values in arrays.items()}
            for i in range(count)]
  return list(np.asarray(outputs, dtype=np.float32)[:count])


class ImageRecord(NamedTuple):
  """One encoded image as read from a shard.

  Attributes:
    key: Unique name of the image (file name, tar sample key, ...).
    source: Path of the shard or file it came from.
    data: The encoded image bytes, undecoded.
    label: Label carried through from the input, if any.
  """
  key: str
  source: str
  data: bytes
  label: Label = None


class DecodedImage(NamedTuple):
  """One image decoded and resized, ready for the model.

  Attributes:
    key: Same as ``ImageRecord.key``.
    source: Same as ``ImageRecord.source``.
    pixels: ``uint8`` array of shape ``(height, width, 3)``, RGB. Kept as
      ``uint8`` (4x smaller than float) until the batch is built.
    label: Same as ``ImageRecord.label``.
  """
  key: str
  source: str
  pixels: np.ndarray
  label: Label = None


class FeatureRecord(NamedTuple):
  """VGG16 activations of one image.

  Attributes:
    key: Same as ``ImageRecord.key``.
    features: ``float32`` array of the chosen layer (after pooling); for a
      run of several layers, a dict of such arrays by layer name.
    label: Same as ``ImageRecord.label``.
    source: Same as ``ImageRecord.source`` (not written to the record;
      it decides the output file where files hold one shard each).
  """
  key: str
  features: Features
  label: Label = None
  source: str = ''


class ErrorRecord(NamedTuple):
  """Why one image could not be turned into features.

  Attributes:
    key: Key of the image (or ``<shard>:<index>`` where none was readable).
    source: Path of the shard or file it came from.
    stage: Which stage failed: ``read``, ``decode`` or ``inference``.
    error_type: Short machine-readable class of the failure.
    message: Human-readable explanation.
  """
  key: str
  source: str
  stage: str
  error_type: str
  message: str

  @classmethod
  def from_exception(cls, key: str, source: str, stage: str,
                     error: BaseException,
                     kind: Optional[str] = None) -> 'ErrorRecord':
    """The one way an exception becomes an error line.

    Args:
      key: The image's key (``<shard>:<index>`` where none was read).
      source: The shard or file it came from.
      stage: ``read``, ``decode`` or ``inference``.
      error: What was raised.
      kind: A category to file it under instead of the exception's own
        (the message then starts with the exception's class).

    Returns:
      An ``ErrorRecord`` whose ``error_type`` is ``kind``, else the
      error's own ``error_type`` (``imaging.ImageError``'s reasons), else
      its class's name; its message is the error's text, or its repr
      when the text is empty.
    """
    message = str(error) or repr(error)
    if kind:
      return cls(key, source, stage, kind,
                 f'{type(error).__name__}: {message}')
    return cls(key, source, stage,
               getattr(error, 'error_type', None) or type(error).__name__,
               message)


class ShardRead(NamedTuple):
  """How many images (good or bad) one input shard held."""
  source: str
  images: int


class ShardWritten(NamedTuple):
  """One finished temporary output file and its record count.

  Attributes:
    kind: ``features`` or ``errors``.
    temp_path: Where the file is until it is published.
    records: How many records it holds.
    source: The input shard all its records came from, where files are
      written per shard; None where a file holds a whole bundle.
  """
  kind: str
  temp_path: str
  records: int
  source: Optional[str] = None


ReadResult = Union[ImageRecord, ErrorRecord]
