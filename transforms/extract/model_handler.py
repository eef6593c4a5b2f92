"""A RunInference model handler for feature extraction.

Beam's RunInference supplies the per-worker model cache (``shared.Shared``:
one model per process; ``large_model`` for one per machine through
``multi_process_shared``), the batching (``BatchElements``), metrics and the
dead-letter output. This handler only says how to load the model and how to run
one batch.
"""
import logging
import os
from typing import Any, Dict, Iterable, Optional, Sequence

from apache_beam.ml.inference.base import ModelHandler

from transforms import metrics
from transforms.extract import models, quiet_import
from transforms.records import (DecodedImage, FeatureRecord,
                                features_per_image)


class FeatureModelHandler(ModelHandler[DecodedImage, FeatureRecord, Any]):
  """Loads the model cut at a layer; turns batches of images into
  features."""

  def __init__(self, config: models.ModelConfig):
    size = models.effective_batch_size(config)
    # Fixed-size batches: min == max, so BatchElements does not start at 1
    # and grow; the last batch of a bundle may be smaller.
    super().__init__(min_batch_size=size, max_batch_size=size,
                     large_model=config.large_model)
    self._config = config

  def load_model(self):
    # RunInference counts loads in its load_model_latency_milli_secs metric
    # (pipeline/job_metrics.py's model_loads, which featurize run prints);
    # the log line says where it happened.
    logging.info('Loading %s in process %d', self._config.display_name,
                 os.getpid())
    quiet_import.import_quietly(self._config.device)
    return models.batch_predictor(models.build_feature_model(self._config))

  def run_inference(
      self,
      batch: Sequence[DecodedImage],
      model,
      inference_args: Optional[Dict[str, Any]] = None
  ) -> Iterable[FeatureRecord]:
    inputs = models.to_model_input([image.pixels for image in batch],
                                   self._config.preprocess)
    outputs = model.predict_on_batch(inputs)
    if self._config.multi_layer:  # a list, in the order of config.layers
      outputs = dict(zip(self._config.layers, outputs))
    for image, features in zip(batch, features_per_image(outputs,
                                                         len(batch))):
      yield FeatureRecord(image.key, features, image.label, image.source)

  def get_num_bytes(self, batch: Sequence[DecodedImage]) -> int:
    return sum(image.pixels.nbytes for image in batch)

  def get_metrics_namespace(self) -> str:
    return metrics.MODEL_NAMESPACE
