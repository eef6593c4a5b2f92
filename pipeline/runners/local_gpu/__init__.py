"""This machine, set up for a local run's worker processes on its GPUs.

What the launcher does before it starts a local ``--device gpu`` job with
Beam's local runner, which starts the worker processes itself and gives
them only its environment (Dataflow does the same on its workers with
``use_nvidia_mps`` and one SDK process per GPU VM):

* ``sharing``: the set-up as one step (``for_run``), and each process's
  share of the machine's cores and of its GPU's memory (``share_gpus``);
* ``placement``: several GPUs, the processes spread over them;
* ``mps``: NVIDIA MPS for the processes that share a GPU.
"""
