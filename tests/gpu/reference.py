"""Reference outputs of the CPU path, made where TensorFlow runs.

The GPU machine has no TensorFlow, so the CPU path's features are computed
here and carried there: ``python -m tests.gpu.reference OUT.npz`` (in the
project's venv). The GPU tests regenerate the same seeded weight file
there and check its digest against the one recorded here.

The file holds JPEGs made from the demo photos (their bytes, so that both
machines decode the very same files), the CPU path's pixels of them, and
TensorFlow's float32 features of those pixels at block5_pool, unpooled
and average-pooled; and, for each of ``OTHER_MODELS``, the CPU path's
features at the model's feature layer, unpooled, with its weight file's
digest and the pixels (``<model>_f32_none``, ``<model>_weights_digest``,
``<model>_pixels``).
"""
import hashlib
import io
import os
import sys

import numpy as np

# Sizes that exercise the resize rule: ImageNet-like, portrait, a large
# photo that the CPU path decodes at reduced size (DCT scaling), a small
# one that is enlarged.
SIZES = {'astronaut': (500, 375), 'chelsea': (375, 500),
         'coffee': (1600, 1200), 'rocket': (200, 150),
         'motorcycle_left': (640, 480), 'hubble_deep_field': (500, 333),
         'retina': (512, 512), 'camera': (512, 512)}
# Models other than VGG16 whose GPU features are checked: other
# preprocessing (caffe's BGR means for ResNet50, none for EfficientNetB0,
# which rescales inside), other layers (batch normalisation, depthwise
# convolutions, squeeze-and-excitation).
OTHER_MODELS = ('resnet50', 'efficientnetb0')


def demo_jpegs():
  """``{name: bytes}``: each photo resized to its size, JPEG quality 90."""
  from tests.support import image_zoo  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  out = {}
  for name, size in SIZES.items():
    image = image_zoo.photo(name).resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, 'JPEG', quality=90)
    out[name] = buffer.getvalue()
  return out


def weights_digest(path: str) -> str:
  """sha256 of the weight arrays' values (HDF5 files carry timestamps).
  Integers count as int64: Keras on JAX stores a counter (EfficientNet's
  normalisation ``count``) as int32 where TensorFlow stores int64."""
  import h5py  # pylint: disable=import-outside-toplevel
  digest = hashlib.sha256()
  with h5py.File(path, 'r') as f:
    def visit(name, item):
      if isinstance(item, h5py.Dataset):
        values = np.asarray(item[()])
        if np.issubdtype(values.dtype, np.integer):
          values = values.astype(np.int64)
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(values).tobytes())
    f.visititems(visit)
  return digest.hexdigest()


def pack(blobs):
  """Byte strings as one uint8 array and their offsets (npz-friendly)."""
  offsets = np.cumsum([0] + [len(b) for b in blobs])
  return np.frombuffer(b''.join(blobs), np.uint8), offsets


def unpack(data, offsets):
  return [data[offsets[i]:offsets[i + 1]].tobytes()
          for i in range(len(offsets) - 1)]


def main(out: str) -> None:
  # pylint: disable=import-outside-toplevel
  import tempfile
  from tests.support.weights import write_official_weights
  from transforms.decode import imaging
  from transforms.extract import models
  jpegs = demo_jpegs()
  names = list(jpegs)
  pixels = np.stack([imaging.decode_image(jpegs[n], imaging.DecodeConfig())
                     for n in names])
  with tempfile.TemporaryDirectory() as folder:
    weights = write_official_weights(os.path.join(
        folder, models.NAMED_MODELS['vgg16'].weights_file_notop))
    features = {}
    for pooling in ('none', 'avg'):
      model = models.build_feature_model(models.ModelConfig(
          weights=weights, pooling=pooling, batch_size=len(names)))
      features[pooling] = np.asarray(
          model.predict_on_batch(models.to_model_input(list(pixels), 'caffe')),
          np.float32)
    digest = weights_digest(weights)
    for name in OTHER_MODELS:
      (features[name], features[f'{name}_pixels'],
       features[f'{name}_digest']) = _model_features(name, jpegs, folder)
  data, offsets = pack([jpegs[n] for n in names])
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  np.savez_compressed(out, names=np.array(names), jpeg_data=data,
                      jpeg_offsets=offsets, pixels=pixels,
                      tf_f32_none=features['none'],
                      tf_f32_avg=features['avg'],
                      weights_digest=np.array(digest),
                      **{f'{name}_f32_none': features[name]
                         for name in OTHER_MODELS},
                      **{f'{name}_pixels': features[f'{name}_pixels']
                         for name in OTHER_MODELS},
                      **{f'{name}_weights_digest': np.array(
                          features[f'{name}_digest'])
                         for name in OTHER_MODELS})


def _model_features(name: str, jpegs, folder: str):
  """The CPU path's float32 features of ``jpegs`` by ``name`` with the
  tests' seeded weights, the pixels they were computed from (decoded at
  the model's own input size) and the weight file's digest."""
  # pylint: disable=import-outside-toplevel
  from tests.support.weights import write_model_weights
  from transforms.decode import imaging
  from transforms.extract import models
  config = models.ModelConfig(model=name, weights=write_model_weights(
      os.path.join(folder, models.catalog.find(name).weights_file_notop),
      name), batch_size=len(jpegs))
  size = config.image_size
  decode = imaging.DecodeConfig(image_size=size,
                                resize_shorter=imaging.shorter_side(size))
  pixels = np.stack([imaging.decode_image(data, decode)
                     for data in jpegs.values()])
  model = models.build_feature_model(config)
  features = np.asarray(model.predict_on_batch(
      models.to_model_input(list(pixels), config.preprocess)), np.float32)
  return features, pixels, weights_digest(config.weights)


if __name__ == '__main__':
  main(sys.argv[1])
