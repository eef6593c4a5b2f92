"""Stage 4, write and publish: feature records and error lines to files,
then the run's output made visible in one step.

* ``outputs``: ``WriteOutputs``, the stage's transform.
* ``bundle_files``: each bundle's records to temporary files.
* ``example_codec``: a feature record as a ``tf.train.Example``.
* ``publish_run``: the check (counts, the error share) and the renames
  that publish a run.
* ``output_files``: the output folder's names, and why a run is refused.
"""
