"""What decides whether a shard's features can be reused. No I/O here.

A shard's fingerprint is what the filesystem already knows about it (size
and modification time, from a file match), never a read of its content. The
model fingerprint covers every setting that changes the features or the
error lines an image gives.
"""
import hashlib
import json
from typing import Any, Dict

from apache_beam.io.filesystem import FileMetadata

from pipeline.config import JobConfig, preprocessing
from transforms.extract import models


def shard_fingerprint(metadata: FileMetadata) -> str:
  """``size=N,mtime=T`` from a Beam file match (local, gs://, ...).

  A rewritten file or object has a new modification time (on GCS: the new
  generation's), so a change is seen without reading the shard.
  """
  mtime = metadata.last_updated_in_seconds
  return (f'size={metadata.size_in_bytes},'
          f'mtime={mtime:.6f}' if mtime is not None else
          f'size={metadata.size_in_bytes},mtime=unknown')


def model_settings(job: JobConfig) -> dict:
  """Every setting that changes what an image gives, and nothing else
  (batch size, runner and package versions are left out)."""
  model = job.model
  weights: Dict[str, Any]
  if model.weights_sha256:
    weights = {'sha256': model.weights_sha256}
  else:  # Not inspected at launch: the official file, or seeded weights.
    weights = {'source': model.weights, 'seed': model.seed,
               'file': model.official_weights_file}
  read = job.read
  settings = {
      'weights': weights,
      'layer': model.layer,
      'pooling': model.pooling,
      'precision': model.precision,
      'preprocessing': preprocessing(job),
      'reading': {'format': read.format, 'image_feature': read.image_feature,
                  'key_feature': read.key_feature,
                  'label_feature': read.label_feature,
                  'max_image_bytes': read.max_image_bytes},
  }
  if model.is_file:
    # The file's content, whatever its name; its weights are in it.
    settings['model'] = {'sha256': model.model_sha256}
  elif model.model != models.DEFAULT_MODEL:
    # Absent for VGG16, the one model there was: its datasets' older
    # fingerprints stay valid. The image size and the model's
    # preprocessing are in 'preprocessing'.
    settings['model'] = model.display_name
  if model.device == 'gpu':
    # nvJPEG's pixels differ slightly from Pillow's (its IDCT and chroma
    # upsampling; no DCT-domain downscaling), so one dataset version never
    # mixes the two. Absent for cpu: older fingerprints stay valid.
    settings['decoder'] = 'nvjpeg'
  return settings


def model_fingerprint(job: JobConfig) -> str:
  """A short hash of ``model_settings``."""
  canonical = json.dumps(model_settings(job), sort_keys=True)
  return hashlib.sha256(canonical.encode()).hexdigest()[:16]
