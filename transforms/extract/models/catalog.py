"""The named models: every image classifier of ``keras.applications``.

Each entry says what Keras's own code for the model expects, so that
featurize feeds it exactly that: the side of its square input, its
family's ``preprocess_input`` mode, and the names of its official ImageNet
weight files (what Keras downloads into ``~/.keras/models``).

Preprocessing modes (``keras.applications.imagenet_utils``):

* ``caffe``: RGB to BGR, minus the ImageNet channel means (VGG, ResNet);
* ``tf``: scaled to [-1, 1] (Inception, Xception, MobileNet, NASNet,
  ResNetV2);
* ``torch``: scaled to [0, 1], minus the means, over the deviations
  (DenseNet);
* ``none``: pixels in 0-255 as they are; the model rescales them itself
  (EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3).
"""
import dataclasses
import difflib
from typing import Dict, Tuple

PREPROCESS_MODES = ('caffe', 'tf', 'torch', 'none')


@dataclasses.dataclass(frozen=True)
class NamedModel:
  """One model of ``keras.applications``.

  Attributes:
    name: What ``--model`` takes (any case): the Keras name in lower case.
    keras_name: The constructor in ``keras.applications``.
    input_size: The side its ImageNet weights were trained at.
    preprocess: Its family's preprocessing mode (``PREPROCESS_MODES``).
    weights_file: The official ImageNet weight file with the top
      (classifier) layers.
    weights_file_notop: The one without them.
    family: Its module in ``keras.applications`` (``resnet``,
      ``efficientnet``...), whose ``preprocess_input`` it was trained
      with.
    feature_layer: The output of its convolutional base: the last layer
      of the model without its top, the default ``--layer``.
    parameters: The parameters of its convolutional base.
  """
  name: str
  keras_name: str
  input_size: int
  preprocess: str
  weights_file: str
  weights_file_notop: str
  family: str
  feature_layer: str
  parameters: int

  def official_weights_file(self, include_top: bool) -> str:
    """The official weight file a model with or without its top needs."""
    return self.weights_file if include_top else self.weights_file_notop


def _tf_kernels(stem: str) -> Tuple[str, str]:
  return (f'{stem}_weights_tf_dim_ordering_tf_kernels.h5',
          f'{stem}_weights_tf_dim_ordering_tf_kernels_notop.h5')


def _suffixed(stem: str, notop: str = '_notop') -> Tuple[str, str]:
  return f'{stem}.h5', f'{stem}{notop}.h5'


def _entries():
  """(Keras name, input size, preprocessing, weight files, family)."""
  yield 'VGG16', 224, 'caffe', _tf_kernels('vgg16'), 'vgg16'
  yield 'VGG19', 224, 'caffe', _tf_kernels('vgg19'), 'vgg19'
  for depth in (50, 101, 152):
    yield (f'ResNet{depth}', 224, 'caffe', _tf_kernels(f'resnet{depth}'),
           'resnet')
    yield (f'ResNet{depth}V2', 224, 'tf', _tf_kernels(f'resnet{depth}v2'),
           'resnet_v2')
  yield 'InceptionV3', 299, 'tf', _tf_kernels('inception_v3'), 'inception_v3'
  yield ('InceptionResNetV2', 299, 'tf', _tf_kernels('inception_resnet_v2'),
         'inception_resnet_v2')
  yield 'Xception', 299, 'tf', _tf_kernels('xception'), 'xception'
  for depth in (121, 169, 201):
    yield (f'DenseNet{depth}', 224, 'torch', _tf_kernels(f'densenet{depth}'),
           'densenet')
  yield ('MobileNet', 224, 'tf', _suffixed('mobilenet_1_0_224_tf', '_no_top'),
         'mobilenet')
  yield ('MobileNetV2', 224, 'tf', _suffixed(
      'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224', '_no_top'),
         'mobilenet_v2')
  for kind in ('Small', 'Large'):
    yield (f'MobileNetV3{kind}', 224, 'none', _suffixed(
        f'weights_mobilenet_v3_{kind.lower()}_224_1.0_float', '_no_top_v2'),
           'mobilenet_v3')
  for variant, size in zip(range(8), (224, 240, 260, 300, 380, 456, 528,
                                      600)):
    yield (f'EfficientNetB{variant}', size, 'none',
           _suffixed(f'efficientnetb{variant}'), 'efficientnet')
  for variant, size in (('B0', 224), ('B1', 240), ('B2', 260), ('B3', 300),
                        ('S', 384), ('M', 480), ('L', 480)):
    yield (f'EfficientNetV2{variant}', size, 'none',
           _suffixed(f'efficientnetv2-{variant.lower()}'), 'efficientnet_v2')
  for size_name in ('Tiny', 'Small', 'Base', 'Large', 'XLarge'):
    yield (f'ConvNeXt{size_name}', 224, 'none',
           _suffixed(f'convnext_{size_name.lower()}'), 'convnext')
  yield ('NASNetMobile', 224, 'tf', _suffixed('nasnet_mobile', '_no_top'),
         'nasnet')
  yield ('NASNetLarge', 331, 'tf', _suffixed('nasnet_large', '_no_top'),
         'nasnet')


# Each model's feature layer and parameters at its own size, as its graph
# says (``anatomy.model_table``; tests/unit/extract/test_models.py checks
# a sample), for listings that should not build forty models. Unnamed
# layers get the names a first build gets (``keras_build``).
_BASES = {
    'vgg16': ('block5_pool', 14_714_688),
    'vgg19': ('block5_pool', 20_024_384),
    'resnet50': ('conv5_block3_out', 23_587_712),
    'resnet50v2': ('post_relu', 23_564_800),
    'resnet101': ('conv5_block3_out', 42_658_176),
    'resnet101v2': ('post_relu', 42_626_560),
    'resnet152': ('conv5_block3_out', 58_370_944),
    'resnet152v2': ('post_relu', 58_331_648),
    'inceptionv3': ('mixed10', 21_802_784),
    'inceptionresnetv2': ('conv_7b_ac', 54_336_736),
    'xception': ('block14_sepconv2_act', 20_861_480),
    'densenet121': ('relu', 7_037_504),
    'densenet169': ('relu', 12_642_880),
    'densenet201': ('relu', 18_321_984),
    'mobilenet': ('conv_pw_13_relu', 3_228_864),
    'mobilenetv2': ('out_relu', 2_257_984),
    'mobilenetv3small': ('activation_17', 939_120),
    'mobilenetv3large': ('activation_19', 2_996_352),
    'efficientnetb0': ('top_activation', 4_049_571),
    'efficientnetb1': ('top_activation', 6_575_239),
    'efficientnetb2': ('top_activation', 7_768_569),
    'efficientnetb3': ('top_activation', 10_783_535),
    'efficientnetb4': ('top_activation', 17_673_823),
    'efficientnetb5': ('top_activation', 28_513_527),
    'efficientnetb6': ('top_activation', 40_960_143),
    'efficientnetb7': ('top_activation', 64_097_687),
    'efficientnetv2b0': ('top_activation', 5_919_312),
    'efficientnetv2b1': ('top_activation', 6_931_124),
    'efficientnetv2b2': ('top_activation', 8_769_374),
    'efficientnetv2b3': ('top_activation', 12_930_622),
    'efficientnetv2s': ('top_activation', 20_331_360),
    'efficientnetv2m': ('top_activation', 53_150_388),
    'efficientnetv2l': ('top_activation', 117_746_848),
    'convnexttiny': ('layer_normalization', 27_820_128),
    'convnextsmall': ('layer_normalization', 49_454_688),
    'convnextbase': ('layer_normalization', 87_566_464),
    'convnextlarge': ('layer_normalization', 196_230_336),
    'convnextxlarge': ('layer_normalization', 348_147_968),
    'nasnetmobile': ('activation_187', 4_269_716),
    'nasnetlarge': ('activation_259', 84_916_818),
}

NAMED_MODELS: Dict[str, NamedModel] = {
    keras_name.lower(): NamedModel(keras_name.lower(), keras_name, size,
                                   preprocess, files[0], files[1], family,
                                   *_BASES[keras_name.lower()])
    for keras_name, size, preprocess, files, family in _entries()
}
DEFAULT_MODEL = 'vgg16'


def find(name: str) -> NamedModel:
  """The named model ``name`` (any case).

  Raises:
    ValueError: no such model, with the closest names.
  """
  key = name.strip().lower()
  if key in NAMED_MODELS:
    return NAMED_MODELS[key]
  close = difflib.get_close_matches(key, NAMED_MODELS, n=3)
  hint = (f'did you mean {", ".join(close)}? ' if close else '')
  raise ValueError(f'unknown model {name!r}; {hint}`featurize models` lists '
                   'them all, or pass the path of a .keras file')


def is_named(model: str) -> bool:
  """Whether ``--model`` names a model of the catalog rather than a file:
  a path (``/``, ``.keras``) or URL is a file, anything else a name."""
  text = model.strip()
  return not ('/' in text or text.lower().endswith('.keras'))
