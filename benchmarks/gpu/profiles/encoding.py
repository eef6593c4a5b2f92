"""One planned image rendered from a real photo and encoded
(``encode``); many at once in processes (``encode_all``)."""
import contextlib
import functools
import io
import multiprocessing
import multiprocessing.pool
import os
from typing import List, Optional, Sequence, Tuple

from PIL import Image


from benchmarks.gpu.profiles.draws import (
    ImagePlan, ORIENTATION_TAG, PHOTO_FILES, _STORE_ORIENTED)


@functools.lru_cache(maxsize=1)
def _photos() -> Tuple[Image.Image, ...]:
  """The real photos in RGB, by name, loaded once per process."""
  import skimage.data  # pylint: disable=import-outside-toplevel
  folder = os.path.dirname(skimage.data.__file__)
  photos = []
  for name in sorted(PHOTO_FILES, key=lambda n: n.split('.')[0]):
    with Image.open(os.path.join(folder, name)) as photo:
      photos.append(photo.convert('RGB'))
  return tuple(photos)


def render(plan: ImagePlan) -> Image.Image:
  """The pixels of one planned image, before encoding."""
  photo = _photos()[plan.photo]
  # The photo as shown: for orientations 5..8 the stored image is its
  # transpose, so the shown one has the sides swapped.
  shown = ((plan.height, plan.width) if plan.orientation in (5, 6, 7, 8)
           else (plan.width, plan.height))
  aspect = shown[0] / shown[1]
  scale, left_share, top_share = plan.crop
  box_width = min(photo.width, photo.height * aspect) * scale
  box_height = box_width / aspect
  left = (photo.width - box_width) * left_share
  top = (photo.height - box_height) * top_share
  image = photo.resize(shown, Image.Resampling.BICUBIC,
                       box=(left, top, left + box_width, top + box_height))
  if plan.mirror:
    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  if plan.orientation != 1:
    image = image.transpose(_STORE_ORIENTED[plan.orientation])
  if plan.mode != 'RGB':
    image = image.convert(plan.mode)
  return image


def encode(plan: ImagePlan) -> bytes:
  """Renders and encodes one planned image."""
  image = render(plan)
  out = io.BytesIO()
  if plan.pil_format == 'JPEG':
    options = dict(quality=plan.quality, subsampling=plan.subsampling,
                   progressive=plan.progressive)
    if plan.orientation != 1:
      exif = image.getexif()
      exif[ORIENTATION_TAG] = plan.orientation
      options['exif'] = exif
    image.save(out, 'JPEG', **options)
  elif plan.pil_format == 'WEBP':
    image.save(out, 'WEBP', quality=plan.quality)
  else:
    image.save(out, plan.pil_format)
  return out.getvalue()


def _encode_indexed(plan: ImagePlan) -> Tuple[int, bytes]:
  return plan.index, encode(plan)


def process_pool(processes: Optional[int], tasks: int):
  """A context giving a pool of ``processes`` (None: one per core, at most
  one per task), or None when this process is to do the work alone."""
  processes = min(processes or os.cpu_count() or 1, tasks)
  if processes <= 1:
    return contextlib.nullcontext()
  # spawn, not fork: the caller may have TensorFlow, JAX or Beam threads
  # running, and forking a threaded process can deadlock the child.
  return multiprocessing.get_context('spawn').Pool(processes)


def encode_all(plans: Sequence[ImagePlan],
               pool: Optional[multiprocessing.pool.Pool] = None) -> List[bytes]:
  """Encodes the planned images, in parallel when given a pool.

  Args:
    plans: From ``draw_plans``.
    pool: Worker processes; None encodes in this process. The bytes do not
      depend on it.

  Returns:
    The encoded images, in the order of ``plans``.
  """
  if pool is None:
    return [encode(plan) for plan in plans]
  position = {plan.index: n for n, plan in enumerate(plans)}
  encoded: List[Optional[bytes]] = [None] * len(plans)
  # Largest first, so that no worker is left with a 12-megapixel image
  # while the others idle.
  order = sorted(plans, key=lambda p: -p.width * p.height)
  for index, data in pool.imap_unordered(_encode_indexed, order, chunksize=4):
    encoded[position[index]] = data
  return encoded
