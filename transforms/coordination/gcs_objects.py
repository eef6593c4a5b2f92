"""The google-cloud-storage object behind a ``gs://`` path.

Beam's FileSystems cover reading and writing; conditional writes (a
generation precondition) need the storage client itself.
"""


def blob(gcs_path: str):
  """The ``Blob`` of ``gs://bucket/name`` (not fetched)."""
  # Only where outputs live in GCS. Not `from google.cloud import storage`,
  # the same at run time: google-cloud-storage has no type information,
  # and mypy takes that form for a missing attribute of the namespace
  # package google.cloud (which typed Google packages share).
  import google.cloud.storage as storage
  bucket, _, name = gcs_path[len('gs://'):].partition('/')
  return storage.Client().bucket(bucket).blob(name)
