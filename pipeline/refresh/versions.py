"""A dataset root's versions and its pointer to the latest one.

Manifests are written once under a new name and never changed; the
pointer ``ROOT/LATEST`` is the only file that is replaced, atomically: a
rename on local disk, and on GCS a write conditioned on the generation of
the pointer the refresh planned against (so that a refresh which lost a
race fails instead of hiding the other's version). A reader that follows
the pointer sees one whole version, the old or the new.
"""
import datetime
import json
import os
from typing import List, NamedTuple, Optional

from apache_beam.io.filesystems import FileSystems

from transforms.coordination import gcs_objects

POINTER = 'LATEST'
VERSIONS = 'versions'
FILES = 'files'
STAGING = '.staging'
# The error lines of the last refresh that failed with too many errors,
# kept (outside the staging folder, which the next refresh clears) until
# another refresh fails so: FAILED/<version>-<refresh>/<shard>/errors-*.
FAILED = 'failed'


class PointerMoved(Exception):
  """The pointer changed after this refresh planned: another one won."""


class Pointer(NamedTuple):
  """What ``LATEST`` says, and which write of it was read.

  Attributes:
    version: The latest version's name.
    generation: The GCS object generation read, or None on other
      filesystems.
  """
  version: str
  generation: Optional[int] = None


def path(root: str, *parts: str) -> str:
  return FileSystems.join(root.rstrip('/'), *parts)


def manifest_path(root: str, version: str) -> str:
  return path(root, VERSIONS, f'{version}.json')


def read_pointer(root: str) -> Optional[Pointer]:
  """The pointer, or None for a dataset with no version yet."""
  target = path(root, POINTER)
  if target.startswith('gs://'):
    blob = gcs_objects.blob(target)
    if not blob.exists():
      return None
    blob.reload()
    # Kept before the download, which may reset the blob's properties.
    generation = blob.generation
    data = blob.download_as_bytes(if_generation_match=generation)
    return Pointer(json.loads(data)['version'], generation)
  if not FileSystems.exists(target):
    return None
  with FileSystems.open(target) as f:
    return Pointer(json.load(f)['version'])


def read_manifest(root: str, version: str) -> dict:
  with FileSystems.open(manifest_path(root, version)) as f:
    return json.load(f)


def latest(root: str) -> Optional[dict]:
  """The latest version's manifest, or None."""
  pointer = read_pointer(root)
  return read_manifest(root, pointer.version) if pointer else None


def next_version(parent: Optional[str],
                 now: Optional[datetime.datetime] = None) -> str:
  """``v000004-20261129T001500Z``: numbered after the parent, sortable."""
  number = _number(parent) + 1 if parent else 1
  now = now or datetime.datetime.now(datetime.timezone.utc)
  return f'v{number:06d}-{now.strftime("%Y%m%dT%H%M%SZ")}'


def write_manifest(root: str, manifest: dict) -> str:
  """Writes a version's manifest under its own new name; returns it."""
  target = manifest_path(root, manifest['version'])
  if FileSystems.exists(target):
    raise FileExistsError(f'{target} exists: versions are never rewritten')
  temp = target + '.tmp'
  with FileSystems.create(temp) as f:
    f.write(json.dumps(manifest, indent=2, sort_keys=True).encode() + b'\n')
  FileSystems.rename([temp], [target])
  return target


def swap_pointer(root: str, version: str,
                 expected: Optional[Pointer]) -> None:
  """Points ``LATEST`` at ``version`` if it still says ``expected``.

  Raises:
    PointerMoved: another refresh published since this one planned.
  """
  target = path(root, POINTER)
  data = json.dumps({'version': version,
                     'manifest': f'{VERSIONS}/{version}.json'}).encode()
  if target.startswith('gs://'):
    from google.api_core import exceptions
    try:
      gcs_objects.blob(target).upload_from_string(
          data, content_type='application/json',
          if_generation_match=expected.generation if expected else 0)
    except exceptions.PreconditionFailed:
      raise PointerMoved(f'{target} changed after this refresh planned '
                         'against it') from None
    return
  current = read_pointer(root)
  if current != expected:
    raise PointerMoved(f'{target} says {current and current.version}, '
                       f'this refresh planned against '
                       f'{expected and expected.version}')
  # Write beside it, then rename over it: atomic on local disk.
  temp = f'{target}.{os.getpid()}.tmp'
  with FileSystems.create(temp) as f:
    f.write(data)
  FileSystems.rename([temp], [target])


def files_of(manifest: dict, kind: str = 'features') -> List[str]:
  """Paths (relative to the root) of a version's files of one kind."""
  return [f['path'] for entry in manifest['shards']
          for f in entry['files'][kind]]


def list_versions(root: str) -> List[str]:
  """Every version with a manifest, oldest first."""
  matched = FileSystems.match([manifest_path(root, '*')])[0].metadata_list
  names = [m.path.rsplit('/', 1)[-1][:-len('.json')] for m in matched]
  return sorted(n for n in names if n.startswith('v'))


def prune(root: str, keep: int) -> List[str]:
  """Keeps the newest ``keep`` versions (the latest always among them),
  deletes the others' manifests and every file no kept version lists.

  Returns:
    The versions deleted.
  """
  names = list_versions(root)
  pointer = read_pointer(root)
  kept = set(names[-keep:]) | ({pointer.version} if pointer else set())
  dropped = [n for n in names if n not in kept]
  if not dropped:
    return []
  in_use = set()
  for name in kept:
    manifest = read_manifest(root, name)
    in_use.update(files_of(manifest, 'features') + files_of(manifest,
                                                            'errors'))
  garbage = set()
  for name in dropped:
    manifest = read_manifest(root, name)
    garbage.update(files_of(manifest, 'features') + files_of(manifest,
                                                             'errors'))
  doomed = [path(root, p) for p in sorted(garbage - in_use)]
  doomed = [p for p in doomed if FileSystems.exists(p)]
  if doomed:
    FileSystems.delete(doomed)
  # Manifests last: a prune killed half way leaves them to say what is
  # still to delete.
  FileSystems.delete([manifest_path(root, name) for name in dropped])
  return dropped


def _number(version: str) -> int:
  return int(version.split('-')[0][1:])


def remove_unpublished(root: str) -> List[str]:
  """Deletes what a killed refresh left past the latest version: manifests
  and files of versions the pointer never reached. Call it holding the
  lock. Returns the paths deleted.
  """
  pointer = read_pointer(root)
  newest = _number(pointer.version) if pointer else 0
  doomed = [manifest_path(root, name) for name in list_versions(root)
            if _number(name) > newest]
  files = FileSystems.match([path(root, FILES, '*', '**')])[0].metadata_list
  prefix = path(root, FILES) + '/'
  for metadata in files:
    version = metadata.path[len(prefix):].split('/', 1)[0]
    if version.startswith('v') and _number(version) > newest:
      doomed.append(metadata.path)
  doomed += [m.path for m in FileSystems.match(
      [path(root, VERSIONS, '*.tmp')])[0].metadata_list]
  if doomed:
    FileSystems.delete(doomed)
  return doomed
