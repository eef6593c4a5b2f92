"""``WriteOutputs``: features and error lines to sharded files, then the
manifest and ``_SUCCESS``, written last.

Nothing here groups the feature records: each bundle streams into its own
file (``bundle_files``) and one final step renames them (``publish``).
"""
import uuid

import apache_beam as beam

from transforms.bundle_files import (WriteShards, encode_error_line,
                                     encode_feature_record)
from transforms.output_files import ERRORS_KIND, FEATURES_KIND, OutputConfig
from transforms.publish import PublishRunFn


class WriteOutputs(beam.PTransform):
  """Writes features, error lines, then the manifest and ``_SUCCESS``.

  Args:
    config: Output folder and error threshold.
    describe: What produced the features (model, preprocessing, versions),
      copied into the manifest.

  Input: a dict with ``features`` (``FeatureRecord``), ``errors``
  (``ErrorRecord``) and ``counts`` (``ShardRead``) PCollections.
  Returns the PCollection holding the manifest (one element).
  """

  def __init__(self, config: OutputConfig, describe: dict):
    super().__init__()
    self.config = config
    self.describe = describe
    # A fresh folder per run; creating it waits for run time.
    self.temp_dir = config.path(f'.temp-featurize-{uuid.uuid4().hex[:12]}')

  def expand(self, outputs):
    pipeline = outputs['features'].pipeline
    feature_files = outputs['features'] | 'WriteFeatures' >> WriteShards(
        FEATURES_KIND, self.temp_dir, encode_feature_record)
    error_files = outputs['errors'] | 'WriteErrors' >> WriteShards(
        ERRORS_KIND, self.temp_dir, encode_error_line)
    return (
        pipeline
        | 'Once' >> beam.Create([None])
        | 'PublishRun' >> beam.ParDo(
            PublishRunFn(self.config, self.temp_dir, self.describe),
            beam.pvalue.AsList(outputs['counts']),
            beam.pvalue.AsList(feature_files),
            beam.pvalue.AsList(error_files)))
