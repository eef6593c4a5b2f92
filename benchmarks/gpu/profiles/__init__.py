"""Benchmark datasets whose images vary the way users' real datasets do.

The GPU benchmark once measured one kind of image (500x375 baseline
JPEGs). A decoder's speed depends on each image's pixels, bytes, progressive
scans, chroma subsampling, colour space and format, so a number measured on
that one kind can be far from what users see. Each profile here draws every
image's size and properties from a distribution:

* ``uniform``: those images (500x375, baseline, quality 90, 4:2:0, RGB, no
  EXIF), as a comparison row.
* ``imagenet``: ImageNet's train set as TFDS ships it: mostly its common
  shapes (500x375, 375x500, 500x333, ...), most others with a long side of
  300-500 px, about 5 % of 800-2,600 px and a thin tail of several
  megapixels; a few progressive, grayscale and CMYK JPEGs and PNGs named
  ``.jpg``.
* ``web``: a web crawl: short sides of 240-900 px, 8 % larger photos,
  mixed quality and chroma subsampling, 15 % progressive, 5 % grayscale,
  6 % with an EXIF orientation, 5 % PNG, WebP or GIF.

The shares are estimates of those datasets (written down from what is known
of them), not measurements of one. The pixels are real photos (scikit-image's,
the ones of ``pipeline.demo.real_photos``): a random box of the drawn aspect
ratio from one photo, resized to the drawn size and randomly mirrored, so
that images compress like photos. The photos are 300-1,400 px, so images
much larger than that are upscaled and compress better (fewer bytes per
pixel) than a camera's photos of the same size would.

``distinct`` images (2,048 by default) are drawn and encoded in parallel,
then repeated under distinct keys up to the count asked for, so that 100,000
images take seconds to write. Statistics of what was written (pixels, bytes,
shares of each property, measured from the encoded bytes) come back with the
shards, for the benchmark report.

This module needs only numpy, Pillow and scikit-image (for the photos), as
the GPU machine has them: no TensorFlow, Beam or ``pipeline.demo`` (whose
TFRecord writer needs ``google_crc32c``). Its ``tf.train.Example`` records
come from featurize's own encoder (``transforms.write.example_codec``), because
building them with the protobuf classes would import TensorFlow on the CPU
machine; TFRecord shards still need ``google_crc32c`` for their checksums
(as featurize does to read them), WebDataset shards need nothing more.

The modules, in the order the data flows: ``draws`` (the profiles and
each image's seeded plan), ``encoding`` (rendered from a photo, encoded,
in processes), ``facts`` (statistics measured from the bytes) and
``shards`` (TFRecord or WebDataset shards, cached: ``write_profile``).

Run ``python -m benchmarks.gpu.profiles --profile imagenet --images 20000
--out /tmp/x`` to write a dataset and print its statistics as JSON.
"""
from benchmarks.gpu.profiles.draws import (
    IMAGENET_SHAPES, PHOTO_FILES, PROFILES, SHARD_FORMATS, ImagePlan,
    OtherFormat, Profile, draw_plans, get_profile)
from benchmarks.gpu.profiles.encoding import encode, encode_all, render
from benchmarks.gpu.profiles.facts import ImageFacts, describe, image_facts
from benchmarks.gpu.profiles.shards import ProfileData, write_profile

__all__ = ['IMAGENET_SHAPES', 'PHOTO_FILES', 'PROFILES', 'SHARD_FORMATS',
           'ImageFacts', 'ImagePlan', 'OtherFormat', 'Profile', 'ProfileData',
           'describe', 'draw_plans', 'encode', 'encode_all', 'get_profile',
           'image_facts', 'render', 'write_profile']
