"""The models featurize runs: every image model of ``keras.applications``.

* ``catalog``: the named models, with each one's input size,
  preprocessing and official weight files.
* ``model_config``: ``ModelConfig`` (which model, layers, precision...)
  and its ``Anatomy`` (what the model's graph says of it).
* ``anatomy``: the graph read once at launch, without weights: layers,
  shapes, the activation peak of one image, parameters (``resolve``).
* ``keras_build``: the model built with its weights and cut at the
  deepest requested layer; ``batch_predictor``, its forward pass traced
  once for every batch size.
* ``preprocess``: pixels to model input, in the family's mode.
* ``weight_files``: a weight file checked at launch and copied once per
  worker machine.
* ``batch_memory``: the bytes one image adds to a batch, and the batch
  size that bounds it.
"""
from transforms.extract.models.anatomy import resolve
from transforms.extract.models.batch_memory import (activation_bytes,
                                                    effective_batch_size,
                                                    feature_shape,
                                                    feature_shapes,
                                                    weights_bytes)
from transforms.extract.models.catalog import (DEFAULT_MODEL, NAMED_MODELS,
                                               PREPROCESS_MODES)
from transforms.extract.models.keras_build import (AnyBatchSize,
                                                  batch_predictor,
                                                  build_feature_model)
from transforms.extract.models.model_config import (DEFAULT_BATCH_SIZE,
                                                    DEFAULT_MAX_BATCH_BYTES,
                                                    DEFAULT_PRECISION,
                                                    POOLINGS, PRECISIONS,
                                                    Anatomy, ModelConfig)
from transforms.extract.models.preprocess import to_model_input
from transforms.extract.models.weight_files import (inspect_weight_file,
                                                    keras_cache_path,
                                                    local_weights_copy,
                                                    sha256_of)

__all__ = [
    'Anatomy', 'AnyBatchSize', 'DEFAULT_BATCH_SIZE', 'DEFAULT_MAX_BATCH_BYTES',
    'DEFAULT_MODEL', 'DEFAULT_PRECISION', 'NAMED_MODELS', 'POOLINGS',
    'PRECISIONS', 'PREPROCESS_MODES', 'ModelConfig', 'activation_bytes',
    'batch_predictor', 'build_feature_model', 'effective_batch_size',
    'feature_shape', 'feature_shapes', 'inspect_weight_file',
    'keras_cache_path', 'local_weights_copy', 'resolve', 'sha256_of',
    'to_model_input', 'weights_bytes',
]
