"""The GPU path (``--device gpu``): JPEGs decoded on the GPU with nvJPEG,
VGG16 on Keras 3's JAX backend, one model replica per GPU.

* ``backend``: picks the Keras backend for a device, before Keras loads.
* ``jpeg_header``: which JPEGs nvJPEG may decode, from their headers.
* ``orientation``: EXIF orientation as flips and a transpose.
* ``resample``: the CPU path's crop/resize rule as weight matrices.
* ``batching``: encoded images in batches bounded by count and bytes.
* ``decoders``: nvJPEG on the GPU (and a Pillow stand-in for CPU tests).
* ``device_model``: VGG16 jitted once, a replica per device.
* ``device_batches``: one batch through screen, decode, stack and model.
* ``extract``: the Beam transform that ties them together.
"""
