"""Which decoder each image goes to on the GPU path, from its header.

nvJPEG's hardware engines (the H200 has seven) decode baseline JPEGs in
batches without using the GPU's multiprocessors. Everything else that
torchvision hands nvJPEG (progressive JPEGs above all) is decoded one
image at a time under one global lock, with its Huffman decoding on the
CPU: about 450 images/s a process at 500x375, slower than libjpeg-turbo
on a few cores. So ``route`` sends an image to the device only when the
hardware takes it, and everything else to the CPU path's own decoder
(``imaging.decode_image``, run by a pool of threads beside the GPU's
batches), which gives exactly the CPU path's pixels or error line and,
for large JPEGs, scales them down in the DCT (Pillow's draft mode).

Large baseline JPEGs may go either way. nvJPEG's engines decode every
pixel, and their throughput is shared by every process on the GPU,
while Pillow's draft mode decodes such an image at 1/2 to 1/8 of its
size, for a few milliseconds of one core. On ImageNet-like data, the 4%
of images with a short side of 512 pixels or more hold about 40% of the
pixels. So ``route`` can send them to the CPU while its decoder threads
have room (the caller says so), and to the device otherwise: the CPU
takes what it can without ever holding back the GPU's batches. With the
worker processes sharing the GPU through MPS the host's cores, not the
GPU, ran short, so the GPU path asks for it only where a variable says
so (``extract.LARGE_DRAFT``).

Routes are counted by category (``CATEGORIES``) so that a run's summary
shows the share of images each way.
"""
from typing import NamedTuple

from transforms.decode import imaging
from transforms.extract.gpu import jpeg_header, ragged_resize

# Where an image goes, and why. 'device' is nvJPEG's hardware path; every
# other category is decoded on the CPU.
DEVICE = 'device'
# 'large_draft': a baseline JPEG the device could take, decoded reduced
# on the CPU because its decoder had room.
LARGE_DRAFT = 'large_draft'
CATEGORIES = (DEVICE, LARGE_DRAFT, 'progressive', 'not_jpeg', 'cmyk',
              'too_large', 'extreme_aspect', 'other_jpeg')
# The smallest draft factor worth a CPU decode instead of the device's: 2
# decodes a quarter of the pixels.
MIN_DRAFT_SCALE = 2


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


def route(data: bytes, config: imaging.DecodeConfig,
          cpu_has_room: bool = False,
          min_draft_scale: int = MIN_DRAFT_SCALE) -> Route:
  """Screens one encoded image and picks its decoder (never raises).

  Args:
    data: The encoded image, any format.
    config: The decode rules (``max_pixels``, the model's size).
    cpu_has_room: Whether the CPU decoder can take a large JPEG now.
    min_draft_scale: The draft factor from which a JPEG counts as large
      (1: every baseline JPEG goes to the CPU while it has room).

  Returns:
    A ``Route``: the device for baseline JPEGs that the header screen lets
    through, unless ``cpu_has_room`` and Pillow's draft mode would decode
    the image at ``min_draft_scale`` or more; the CPU for everything else.
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
  if cpu_has_room and imaging.draft_scale(
      screen.width, screen.height, config) >= min_draft_scale:
    return Route(False, LARGE_DRAFT, screen)
  return Route(True, DEVICE, screen)
