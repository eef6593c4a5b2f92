"""Which decoder each image goes to on the GPU path, from its header.

nvJPEG's hardware engines (the H200 has seven) decode baseline JPEGs in
batches without using the GPU's multiprocessors. Everything else that
torchvision hands nvJPEG (progressive JPEGs above all) is decoded one
image at a time under one global lock, with its Huffman decoding on the
CPU: slower than libjpeg-turbo on a few cores. So ``route`` sends an
image to the device only when the hardware takes it, and everything else
to the CPU path's own decoder
(``imaging.decode_image``, run by a pool of threads beside the GPU's
batches), which gives exactly the CPU path's pixels or error line.

Large baseline JPEGs go to the device too, although Pillow's draft mode
would decode them at 1/2 to 1/8 of their size on the CPU: with the
worker processes sharing the GPU through MPS, the host's cores run short
before the GPU's decoders do.

Routes are counted by category (``CATEGORIES``) so that a run's summary
shows the share of images each way.
"""
from typing import NamedTuple

from transforms.decode import imaging
from transforms.extract.gpu import jpeg_header, ragged_resize

# Where an image goes, and why. 'device' is nvJPEG's hardware path; every
# other category is decoded on the CPU.
DEVICE = 'device'
CATEGORIES = (DEVICE, 'progressive', 'not_jpeg', 'cmyk', 'too_large',
              'extreme_aspect', 'other_jpeg')


class Route(NamedTuple):
  """Where one image is decoded.

  Attributes:
    on_device: True for nvJPEG's batched hardware decoder.
    category: One of ``CATEGORIES``.
    screen: What ``jpeg_header.screen`` read from the header.
  """
  on_device: bool
  category: str
  screen: jpeg_header.JpegScreen


def _cpu_category(screen: jpeg_header.JpegScreen) -> str:
  reason = screen.reason
  if reason in ('empty', 'not a JPEG'):
    return 'not_jpeg'
  if reason.startswith('4 components'):
    return 'cmyk'
  if reason.startswith('too many pixels'):
    return 'too_large'
  return 'other_jpeg'


def route(data: bytes, config: imaging.DecodeConfig) -> Route:
  """Screens one encoded image and picks its decoder (never raises).

  Args:
    data: The encoded image, any format.
    config: The decode rules (``max_pixels``, the model's size).

  Returns:
    A ``Route``: the device for baseline JPEGs that the header screen lets
    through and the device's resize takes; the CPU for everything else.
  """
  screen = jpeg_header.screen(data, config.max_pixels)
  if not screen.on_device:
    return Route(False, _cpu_category(screen), screen)
  if screen.progressive:
    return Route(False, 'progressive', screen)
  if not ragged_resize.supported(screen.width, screen.height,
                                 screen.orientation, config):
    # Over 100 times taller than wide: Pillow resizes such images
    # vertically first, an order the device's resize does not do.
    return Route(False, 'extreme_aspect', screen)
  return Route(True, DEVICE, screen)
