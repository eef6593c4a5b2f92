"""featurize's Beam transforms, by stage, and the pure functions they
call.

Images flow read -> extract -> write -> publish (``pipeline/build.py``
chains them; docs/architecture.md draws it):

* ``records``: the typed elements that pass between the stages.
* ``read``: shards (TFRecord, WebDataset, plain files) to encoded images.
* ``extract``: encoded images to the model's features (VGG16 by default, any
  ``keras.applications`` model or a .keras file), on either device; on
  the CPU path it decodes first with ``decode``.
* ``decode``: encoded images to model-sized pixels (the one decode rule,
  which the GPU path's CPU decoder uses too).
* ``write``: features and error lines to files per bundle; its last step
  publishes them (names, manifest, ``_SUCCESS``).
* ``coordination``: the output's lock, the workers' progress counts and
  the fault tests' pause points.
"""
