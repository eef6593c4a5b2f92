"""Builds the featurize graph. No I/O here: only the graph."""
from typing import Optional

import apache_beam as beam

from pipeline.config import JobConfig, describe
from transforms.decode.decode_images import DecodeImages
from transforms.extract.features import ExtractFeatures
from transforms.extract.gpu.on_device import ExtractOnDevice
from transforms.read.image_shards import ReadImageShards
from transforms.write.outputs import WriteOutputs


def extract_all(pipeline: beam.Pipeline, job: JobConfig) -> dict:
  """read -> decode -> VGG16, the part every job shares (on ``gpu``,
  decoding and VGG16 are one step on the device).

  Returns:
    A dict of PCollections: ``features`` (``FeatureRecord``), ``errors``
    (``ErrorRecord``, from every stage) and ``counts`` (``ShardRead``).
  """
  read = pipeline | 'ReadImageShards' >> ReadImageShards(job.read)
  if job.model.device == 'gpu':
    # Encoded bytes go to the GPU, which decodes and runs the model.
    extracted = read.images | 'ExtractOnDevice' >> ExtractOnDevice(
        job.model, job.decode)
    stage_errors = (read.errors, extracted['errors'])
  else:
    decoded = read.images | 'DecodeImages' >> DecodeImages(job.decode)
    extracted = decoded.decoded | 'ExtractFeatures' >> ExtractFeatures(
        job.model)
    stage_errors = (read.errors, decoded.errors, extracted['errors'])
  errors = stage_errors | 'GatherErrors' >> beam.Flatten()
  return {'features': extracted['features'], 'errors': errors,
          'counts': read.counts}


def build_pipeline(pipeline: beam.Pipeline, job: JobConfig,
                   lock_holder: Optional[str] = None):
  """Adds read -> decode -> VGG16 -> write to ``pipeline``.

  Every stage streams: no step holds a shard, the dataset or more than a
  batch of activations, and nothing groups the feature records. The last
  step releases the output folder's lock for ``lock_holder``.

  Returns:
    The PCollection holding the manifest (one element, after ``_SUCCESS``).
  """
  return (extract_all(pipeline, job)
          | 'WriteOutputs' >> WriteOutputs(job.output, describe(job),
                                         lock_holder))
