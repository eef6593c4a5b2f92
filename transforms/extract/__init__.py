"""Stage 3, extract: images in, the model's features out, on the CPU or
GPUs.

* ``features``: ``ExtractFeatures``, the stage's one transform for both
  devices: on ``cpu`` the decode stage, then Beam's RunInference
  (``RunModel``); on ``gpu`` ``gpu.on_device.ExtractOnDevice``.
* ``model_handler``: the RunInference model handler (one cached model a
  worker process, or a machine with ``--large-model``).
* ``models``: the models (every image model of ``keras.applications``),
  their configuration, anatomy, weights and Keras graph.
* ``backend``: which Keras backend a device uses, and how worker
  processes share GPUs (chosen before Keras loads).
* ``quiet_import``: imports TensorFlow without its start-up noise.
* ``gpu``: the GPU path (nvJPEG, the ragged resize, the model on JAX).
"""
