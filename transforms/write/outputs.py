"""``WriteOutputs``: features and error lines to sharded files, then the
manifest and ``_SUCCESS``, written last. ``WriteAndPublish`` is the shape
it shares with a refresh, which publishes a dataset version instead.

Nothing here groups the feature records: each bundle streams into its own
file (``bundle_files``) and one final step renames them (``publish``).
"""
import uuid
from typing import Optional

import apache_beam as beam

from transforms.write.bundle_files import (WriteShards, encode_error_line,
                                           encode_feature_record)
from transforms.write.output_files import (ERRORS_KIND, FEATURES_KIND,
                                           TEMP_PREFIX, OutputConfig)
from transforms.write.publish_run import PublishRunFn


class WriteAndPublish(beam.PTransform):
  """Writes features and error lines to temporary files, then publishes.

  Args:
    temp_dir: Where the temporary files go.
    publish_fn: A DoFn run once, after every file is written, with the
      shards' counts (``ShardRead``) and the files written
      (``ShardWritten``) as three list side inputs.
    per_source: One file per input shard (a refresh reuses shards' files),
      instead of one per bundle.

  Input: a dict with ``features`` (``FeatureRecord``), ``errors``
  (``ErrorRecord``) and ``counts`` (``ShardRead``) PCollections.
  Returns what ``publish_fn`` outputs (one element).
  """

  def __init__(self, temp_dir: str, publish_fn: beam.DoFn,
               per_source: bool = False):
    super().__init__()
    self.temp_dir = temp_dir
    self.publish_fn = publish_fn
    self.per_source = per_source

  def expand(self, outputs):
    pipeline = outputs['features'].pipeline
    feature_files = outputs['features'] | 'WriteFeatures' >> WriteShards(
        FEATURES_KIND, self.temp_dir, encode_feature_record, self.per_source)
    error_files = outputs['errors'] | 'WriteErrors' >> WriteShards(
        ERRORS_KIND, self.temp_dir, encode_error_line, self.per_source)
    return (
        pipeline
        | 'Once' >> beam.Create([None])
        | 'Publish' >> beam.ParDo(
            self.publish_fn,
            beam.pvalue.AsList(outputs['counts']),
            beam.pvalue.AsList(feature_files),
            beam.pvalue.AsList(error_files)))


class WriteOutputs(WriteAndPublish):
  """A run's outputs: files per bundle, then the manifest and ``_SUCCESS``.

  Args:
    config: Output folder and error threshold.
    describe: What produced the features (model, preprocessing, versions),
      copied into the manifest.
    lock_holder: The run's id in the folder's lock, which the last step
      releases (``output_lock``); None for a run that holds none.
  """

  def __init__(self, config: OutputConfig, describe: dict,
               lock_holder: Optional[str] = None):
    # A fresh folder per run; creating it waits for run time.
    temp_dir = config.path(f'{TEMP_PREFIX}{uuid.uuid4().hex[:12]}')
    super().__init__(temp_dir, PublishRunFn(config, temp_dir, describe,
                                            lock_holder))
    self.config = config
    self.describe = describe
