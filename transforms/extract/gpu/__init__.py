"""The GPU path (``--device gpu``): baseline JPEGs decoded on the GPU with
nvJPEG, everything else by the CPU path's decoder beside it, VGG16 on
Keras 3's JAX backend, one model replica per GPU.

(``transforms.extract.backend`` picks the Keras backend for a device
before Keras loads, and reads how processes share a GPU; the launcher
sets that up, ``pipeline/runners/local_gpu/``.)

* ``gpu_slot``: which GPU a worker process takes where a local run
  spreads its processes over several.
* ``jpeg_header``: what a JPEG is, from its header.
* ``routing``: which decoder each image goes to.
* ``orientation``: EXIF orientation as flips and a transpose.
* ``resample``: the CPU path's crop/resize rule, Pillow's arithmetic.
* ``ragged_resize``: that rule for a batch of images of any sizes, in
  one call on the device.
* ``batching``: batches filled from both decoders, bounded by count and
  bytes.
* ``decoders``: nvJPEG on the GPU (and a Pillow stand-in for CPU tests).
* ``device_model``: VGG16 jitted once, a replica per device.
* ``device_batches``: one batch through decode, resize and model.
* ``on_device``: ``ExtractOnDevice``, the Beam transform that ties them
  together.
* ``server``: ``--large-model`` on gpu, one process owning the GPUs.
* ``runtime``: a process's models, decoders and CPU decoder threads.
"""
