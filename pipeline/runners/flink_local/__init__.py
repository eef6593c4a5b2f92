"""A local Apache Flink cluster for featurize: ``featurize flink-local``.

Built from what the package registries serve, nothing fetched at run time:

* ``distribution``: Flink's standalone distribution, assembled from the
  ``apache-flink`` wheel (``bin/``, ``conf/``) and the
  ``apache-flink-libraries`` sdist (``lib/``, ``opt/``, ``plugins/``),
  both ``pip download --no-deps`` (never installed: they pin an old Beam).
* ``job_server``: Beam's Flink job server, assembled with Maven from
  ``beam-runners-flink-1.19`` and its dependency closure, or an official
  job-server jar given by the user.
* ``cluster``: a JobManager, TaskManagers, the job server and one Beam
  worker pool per TaskManager, with logs and PIDs under one folder.
* ``worker_pool`` and ``sdk_boot``: the worker pool each TaskManager sends
  its Python SDK workers to, and the program each worker starts with.

Settings live in ``settings.ClusterSettings``; the command line is
``commands``.
"""
