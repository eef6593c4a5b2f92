"""``featurize refresh``: versioned feature datasets, updated incrementally.

A dataset root holds immutable versions; each lists, for every input shard,
the feature and error files made from it. A refresh lists the input shards
(no content read), reuses the files of every shard whose fingerprint and
model fingerprint are unchanged, runs the pipeline over the new and changed
shards only, and publishes a new version by replacing one pointer::

    ROOT/LATEST                  {"version": ..., "manifest": ...}: the pointer
    ROOT/versions/<version>.json the manifest of each version
    ROOT/files/<version>/...     files made by that version, one shard each
    ROOT/.staging/<refresh>/     a refresh in flight (plan, temporary files)
    ROOT/failed/<version>-<id>/  the error lines of the last refresh that
                                 failed with too many errors

Modules: ``versions`` (the names in a dataset root, its manifests and
pointer), ``fingerprints`` (shard and model fingerprints), ``plan`` (what
to reuse, process and drop), ``refresh_job`` (plan, build and run a
refresh), ``publish_version`` (its last step), ``commands`` (``featurize
files`` and ``history``).
"""
