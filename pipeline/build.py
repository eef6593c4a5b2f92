"""Builds the featurize graph. No I/O here: only the graph."""
from typing import Optional

import apache_beam as beam

from pipeline.config import JobConfig, describe
from transforms.extract.features import ExtractFeatures
from transforms.read.image_shards import ReadImageShards
from transforms.write.outputs import WriteOutputs


def extract_all(pipeline: beam.Pipeline, job: JobConfig) -> dict:
  """read -> extract, the part every job shares.

  Returns:
    A dict of PCollections: ``features`` (``FeatureRecord``), ``errors``
    (``ErrorRecord``, from every stage) and ``counts`` (``ShardRead``).
  """
  read = pipeline | 'ReadImageShards' >> ReadImageShards(job.read)
  extracted = read.images | 'ExtractFeatures' >> ExtractFeatures(job.model,
                                                                job.decode)
  errors = (read.errors, extracted['errors']) | 'GatherErrors' >> beam.Flatten()
  return {'features': extracted['features'], 'errors': errors,
          'counts': read.counts}


def build_pipeline(pipeline: beam.Pipeline, job: JobConfig,
                   lock_holder: Optional[str] = None):
  """Adds read -> extract -> write -> publish to ``pipeline``.

  Every stage streams: no step holds a shard, the dataset or more than a
  batch of activations, and nothing groups the feature records. The last
  step releases the output folder's lock for ``lock_holder``.

  Returns:
    The PCollection holding the manifest (one element, after ``_SUCCESS``).
  """
  return (extract_all(pipeline, job)
          | 'WriteOutputs' >> WriteOutputs(job.output, describe(job),
                                         lock_holder))
