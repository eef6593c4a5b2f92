"""Stage 2 on the CPU, decode: ``ImageRecord`` in, model-sized
``DecodedImage`` (or an ``ErrorRecord`` with the reason) out.

* ``imaging``: the one decode-and-resize rule (Pillow, draft mode for
  large JPEGs, libspng for plain PNGs), shared by both devices.
* ``decode_images``: ``DecodeImages``, the rule as a Beam step.
"""
