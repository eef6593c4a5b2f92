"""The google-cloud-storage object behind a ``gs://`` path.

Beam's FileSystems cover reading and writing; conditional writes (a
generation precondition) need the storage client itself.
"""


def blob(gcs_path: str):
  """The ``Blob`` of ``gs://bucket/name`` (not fetched)."""
  from google.cloud import storage  # Only where outputs live in GCS.
  bucket, _, name = gcs_path[len('gs://'):].partition('/')
  return storage.Client().bucket(bucket).blob(name)
