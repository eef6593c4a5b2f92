"""What featurize brings for runners beyond Beam's own, beside their
settings in ``run_configs/``:

* ``flink_local``: ``featurize flink-local``, a local Apache Flink cluster
  with Beam's job server and worker pools (``run_configs/flink.yaml``).
* ``flex_template``: the Dataflow Flex Template's entry point, which
  turns the template's parameters into a ``featurize run`` or
  ``refresh`` (``run_configs/flex_template_*metadata.json``).
* ``local_gpu``: this machine set up for a local ``--device gpu`` run's
  worker processes (their shares, several GPUs, NVIDIA MPS).
"""
