"""What a refresh does with each input shard, and what it stages for
its last step. No I/O here.

Against the dataset's latest version, each shard matched now is:

* **reused**: same shard fingerprint and same model fingerprint; its files
  go into the new version by reference, and none of its bytes are read;
* **new**: not in the latest version;
* **changed**: in it, with another shard fingerprint or model fingerprint;

and each shard of the latest version that no longer matches is
**removed**: it drops out of the new version.
"""
import dataclasses
import json
from typing import Dict, List, NamedTuple, Optional

from pipeline.refresh import versions


class Plan(NamedTuple):
  """A refresh's plan.

  Attributes:
    model_fingerprint: Of the features this refresh makes.
    parent: The latest version it builds on, or None for the first.
    reused: Entries of the parent's manifest kept as they are.
    new: Path -> fingerprint of shards not in the parent.
    changed: Path -> fingerprint of shards to compute again.
    removed: Paths of the parent's shards that no longer match.
  """
  model_fingerprint: str
  parent: Optional[str]
  reused: List[dict]
  new: Dict[str, str]
  changed: Dict[str, str]
  removed: List[str]

  @property
  def to_process(self) -> Dict[str, str]:
    """Path -> fingerprint of every shard the pipeline must read."""
    return {**self.new, **self.changed}

  @property
  def images_reused(self) -> int:
    return sum(entry['images'] for entry in self.reused)

  @property
  def is_noop(self) -> bool:
    """Nothing to process and nothing to drop: the latest version stands."""
    return not self.new and not self.changed and not self.removed

  def summary(self) -> str:
    """One line for a person, printed before any work."""
    return (f'plan: {len(self.reused)} shards reused '
            f'({self.images_reused} images), {len(self.new)} new, '
            f'{len(self.changed)} changed, {len(self.removed)} removed; '
            f'{len(self.to_process)} shards to read (model '
            f'{self.model_fingerprint})')


def make_plan(listing: Dict[str, str], model_fingerprint: str,
              latest: Optional[dict]) -> Plan:
  """Compares the shards matched now with the latest version's manifest.

  Args:
    listing: Path -> shard fingerprint of every shard matched now.
    model_fingerprint: Of this refresh's model settings.
    latest: The latest version's manifest, or None.
  """
  previous = {entry['path']: entry
              for entry in (latest or {}).get('shards', [])}
  reused, new, changed = [], {}, {}
  for path in sorted(listing):
    entry = previous.get(path)
    if entry is None:
      new[path] = listing[path]
    elif (entry['fingerprint'] == listing[path]
          and entry['model_fingerprint'] == model_fingerprint):
      reused.append(entry)
    else:
      changed[path] = listing[path]
  removed = sorted(set(previous) - set(listing))
  return Plan(model_fingerprint, latest['version'] if latest else None,
              reused, new, changed, removed)


@dataclasses.dataclass(frozen=True)
class StagedPlan:
  """What a refresh leaves its last step (``plan.json`` in its staging
  folder): written by the launcher (``refresh_job``), read by the publish
  step (``publish_version``), perhaps on another machine.

  Attributes:
    version: The version this refresh publishes.
    refresh: The refresh's id, the dataset lock's holder.
    parent: The latest version it builds on, or None for the first.
    parent_pointer: ``LATEST`` as read when planning (the pointer is
      replaced only if it is still that), or None for the first version.
    model_fingerprint: Of the features this refresh makes.
    input_pattern: The ``--input`` pattern.
    describe: The job's description (``pipeline.config.describe``).
    max_error_fraction: Largest share of the images read that may fail.
    reused: Entries of the parent's manifest kept as they are.
    to_process: Path -> shard fingerprint of every shard it reads.
    keep: Keep the newest N versions after publishing (None: all).
  """
  version: str
  refresh: str
  parent: Optional[str]
  parent_pointer: Optional[versions.Pointer]
  model_fingerprint: str
  input_pattern: str
  describe: dict
  max_error_fraction: float
  reused: List[dict]
  to_process: Dict[str, str]
  keep: Optional[int] = None

  def to_json(self) -> str:
    fields = dataclasses.asdict(self)
    fields['parent_pointer'] = (list(self.parent_pointer)
                                if self.parent_pointer else None)
    return json.dumps(fields)

  @classmethod
  def from_json(cls, text: str) -> 'StagedPlan':
    fields = json.loads(text)
    pointer = fields.get('parent_pointer')
    fields['parent_pointer'] = versions.Pointer(*pointer) if pointer else None
    return cls(**fields)
