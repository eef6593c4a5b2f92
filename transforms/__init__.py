"""featurize's Beam transforms, by stage, and the pure functions they
call.

Images flow read -> decode -> extract -> write (``pipeline/build.py``
chains them):

* ``records``: the typed elements that pass between the stages.
* ``read``: shards (TFRecord, WebDataset, plain files) to encoded images.
* ``decode``: encoded images to model-sized pixels (the CPU path).
* ``extract``: pixels, or on GPUs the encoded images, to VGG16 features.
* ``write``: features and error lines to files, then published.
* ``coordination``: the output's lock, the workers' progress counts and
  the fault tests' pause points.
"""
