"""What the workers and the launcher share besides the data.

* ``output_lock``: one run an output folder at a time (local or gs://).
* ``gcs_objects``: the GCS object calls the lock needs.
* ``worker_progress``: the workers' counts, summed by the launcher's
  progress line.
* ``fault_points``: named pauses where the fault tests kill a run.
"""
