"""featurize around its transforms: parse, build and run a job, and the
commands around it.

* ``cli``: the console script; ``options`` and ``config``: parse a run's
  flags and run config into one frozen ``JobConfig``;
  ``memory_plan``: ``--memory-budget``.
* ``build``: the graph, read -> extract -> write -> publish (no I/O).
* ``run``: run a job (the lock, the progress line, the summary);
  ``progress_line``, ``job_metrics``, ``console``: what the user sees.
* ``refresh``: versioned datasets, updated incrementally.
* ``inspection``: ``featurize inspect`` of a run or a dataset version.
* ``runners``: a local Flink cluster, Dataflow's Flex Template.
* ``read_features``: read the outputs without TensorFlow; ``demo``: the
  demo dataset.

Importing this package does not import TensorFlow (``read_features`` must
stay usable where TensorFlow is absent).
"""
