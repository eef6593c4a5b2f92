"""The job's configuration: one frozen object per concern, built once.

Runner settings (``--runner``, ``--direct_num_workers`` ...) are not here:
they go untouched to Beam's ``PipelineOptions``.
"""
import dataclasses
import importlib.metadata
import os
from typing import Any, Dict, Optional

from transforms.decode import imaging
from transforms.extract import models
from transforms.extract.models import preprocess
from transforms.read.image_shards import ReadConfig
from transforms.write import example_codec
from transforms.write.output_files import OutputConfig


@dataclasses.dataclass(frozen=True)
class JobConfig:
  """Everything one featurize job needs, per concern."""
  read: ReadConfig
  decode: imaging.DecodeConfig
  model: models.ModelConfig
  output: OutputConfig
  # What --memory-budget planned (pipeline.memory_plan.MemoryPlan), if set.
  memory_plan: Optional[Any] = None

  def __post_init__(self):
    if self.model.image_size != self.decode.image_size:
      raise ValueError('model and decoding must agree on the image size')
    # A job's model is always resolved: its layers in the model's order,
    # its anatomy read once (transforms/extract/models/anatomy.py).
    object.__setattr__(self, 'model', models.resolve(self.model))


def preprocessing(job: JobConfig) -> dict:
  """How an encoded image becomes the model's input: the decode rules
  and the model's own preprocessing."""
  return {**imaging.describe(job.decode),
          'model_preprocessing': preprocess.describe(job.model)}


# What computes the features on each device (transforms/extract/backend.py).
BACKEND_PACKAGES = {'cpu': ('tensorflow-cpu',),
                    'gpu': ('jax', 'jaxlib', 'torch', 'torchvision')}


def _version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return 'not installed'


def describe(job: JobConfig) -> dict:
  """What produces the features, for the manifest (no I/O)."""
  model = job.model
  if model.weights in ('imagenet', 'random', ''):
    weights_file = (model.official_weights_file
                    if model.weights == 'imagenet' else None)
  else:
    weights_file = os.path.basename(model.weights)
  out: Dict[str, Any] = {
      'model': model.display_name,
      'image_size': model.image_size,
      'layer': model.layer,
      'pooling': model.pooling,
      'precision': model.precision,
      'device': model.device,
      'batch_size': models.effective_batch_size(model),
      'weights': {
          'source': model.weights,
          'file': weights_file,
          'sha256': model.weights_sha256,
          'size_bytes': model.weights_size,
          'seed': model.seed if model.weights == 'random' else None,
      },
      'preprocessing': preprocessing(job),
      'input': {'pattern': job.read.pattern, 'format': job.read.format},
      **({'model_file': {'source': model.model, 'sha256': model.model_sha256,
                         'size_bytes': model.model_size}}
         if model.is_file else {}),
      'versions': {
          package: _version(package)
          for package in ('featurize', 'apache-beam') + BACKEND_PACKAGES[
              model.device] + ('keras', 'pillow', 'numpy')
      },
  }
  if job.memory_plan is not None:
    out['memory_plan'] = job.memory_plan.describe()
  if model.multi_layer:
    # Each kept layer: its pooling, shape and where a record holds it.
    out['outputs'] = []
    for (layer, shape), pooling in zip(models.feature_shapes(model).items(),
                                       model.poolings):
      features_key, shape_key = example_codec.layer_keys(layer)
      out['outputs'].append({'layer': layer, 'pooling': pooling,
                             'feature_shape': list(shape),
                             'features_key': features_key,
                             'shape_key': shape_key})
  else:
    out['feature_shape'] = list(models.feature_shape(model))
  return out
