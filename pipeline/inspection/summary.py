"""What ``featurize inspect`` says about an output: typed, pure, no I/O.

``output`` reads manifests and error files and hands what it read
to the functions here: an ``ErrorTally`` fed line by line, then one of the
``summarise_*`` functions, then ``format_report`` for people.
"""
import dataclasses
import json
from typing import Dict, List, NamedTuple, Optional, Tuple

from pipeline import memory_plan
from transforms.write.output_files import TEMP_PREFIX

EXAMPLES_PER_GROUP = 3
FILES_LISTED = 8

SUCCEEDED = 'succeeded'
FAILED = 'failed'
UNFINISHED = 'unfinished'


class ErrorGroup(NamedTuple):
  """Error lines of one stage and error type.

  Attributes:
    stage: ``read``, ``decode`` or ``inference``.
    error_type: The machine-readable class of the failure.
    count: How many lines.
    examples: The keys of the first few lines, in file order.
  """
  stage: str
  error_type: str
  # Shadows tuple.count; renaming the field would change the public type.
  count: int  # type: ignore[assignment]
  examples: Tuple[str, ...]


class ErrorTally:
  """Counts error lines per (stage, error_type), keeping a few example
  keys per group: memory grows with the number of groups, never with the
  number of lines.
  """

  def __init__(self, examples: int = EXAMPLES_PER_GROUP):
    self._examples = examples
    self._groups: Dict[Tuple[str, str], list] = {}
    self.lines = 0
    self.unreadable = 0

  def add(self, line: bytes) -> None:
    """Counts one line of an ``errors-*.jsonl`` file.

    A line that is not a JSON object (the cut last line of a killed
    writer) is counted as unreadable; blank lines are skipped.
    """
    if not line.strip():
      return
    try:
      error = json.loads(line)
    except ValueError:
      error = None
    if not isinstance(error, dict):
      self.unreadable += 1
      return
    self.lines += 1
    group = self._groups.setdefault(
        (str(error.get('stage')), str(error.get('error_type'))), [0, []])
    group[0] += 1
    if len(group[1]) < self._examples:
      group[1].append(str(error.get('key')))

  def groups(self) -> Tuple[ErrorGroup, ...]:
    """The groups, largest first (ties by stage, then type)."""
    groups = [ErrorGroup(stage, error_type, count, tuple(examples))
              for (stage, error_type), (count, examples)
              in self._groups.items()]
    return tuple(sorted(groups, key=lambda g: (-g.count, g.stage,
                                               g.error_type)))


class FileCount(NamedTuple):
  """One output file and how many records (or lines) it holds."""
  path: str
  records: int


class ModelInfo(NamedTuple):
  """What made the features, from a manifest's describe section."""
  model: str
  layer: str
  pooling: str
  precision: str
  weights: str
  image_size: Optional[int]
  resize: str
  feature_shape: Tuple[int, ...]
  outputs: Tuple[Tuple[str, str, Tuple[int, ...]], ...] = ()
  memory_plan: str = ''


class VersionInfo(NamedTuple):
  """Where a dataset version stands among the dataset's versions.

  Attributes:
    version: Its name.
    latest: The version ``LATEST`` names.
    parent: The version it was refreshed from, or None for the first.
    created_at: When it was published.
    model_fingerprint: The fingerprint of model and preprocessing.
    shards_processed: Input shards this version read (others reused).
    images_processed: Images this version read.
  """
  version: str
  latest: str
  parent: Optional[str]
  created_at: str
  model_fingerprint: str
  shards_processed: int
  images_processed: int


@dataclasses.dataclass(frozen=True)
class Summary:
  """Everything the report says about one output.

  Attributes:
    path: The folder or dataset root inspected.
    kind: ``run``, ``dataset`` or ``leftovers`` (a run killed before it
      wrote its manifest).
    status: ``succeeded``, ``failed`` or ``unfinished``.
    status_detail: One sentence on the status, for people.
    images_in: Images read, where known.
    features: Feature records, where known.
    errors: Error lines per the manifest (or as counted, for leftovers).
    model: Model and preprocessing, where a manifest says.
    input_shards: How many input shards, where known.
    input_pattern: The ``--input`` pattern, where known.
    feature_files: Feature files with their record counts.
    error_files: Error files with their line counts.
    error_groups: Error lines grouped by stage and type, largest first.
    error_lines_read: Error lines read from the error files.
    unreadable_lines: Lines of error files that were not JSON objects.
    version: For a dataset, the version inspected.
    notes: Anything else worth knowing (leftovers, a held lock, counts
      that disagree).
  """
  path: str
  kind: str
  status: str
  status_detail: str
  images_in: Optional[int] = None
  features: Optional[int] = None
  errors: Optional[int] = None
  model: Optional[ModelInfo] = None
  input_shards: Optional[int] = None
  input_pattern: Optional[str] = None
  feature_files: Tuple[FileCount, ...] = ()
  error_files: Tuple[FileCount, ...] = ()
  error_groups: Tuple[ErrorGroup, ...] = ()
  error_lines_read: int = 0
  unreadable_lines: int = 0
  version: Optional[VersionInfo] = None
  notes: Tuple[str, ...] = ()

  @property
  def error_share(self) -> Optional[float]:
    """Errors over images in, where both are known and images_in > 0."""
    if not self.images_in or self.errors is None:
      return None
    return self.errors / self.images_in


class Leftovers(NamedTuple):
  """What unfinished runs left in ``.temp-featurize-*`` folders.

  Attributes:
    folders: How many temporary folders.
    feature_files: Temporary feature files with the complete records each
      holds (-1 where not counted: remote files are not scanned).
    error_files: Paths of the temporary error files.
  """
  folders: int
  feature_files: Tuple[FileCount, ...]
  error_files: Tuple[str, ...]


def model_info(describe: dict) -> ModelInfo:
  """The model and preprocessing of a manifest's describe section."""
  weights = describe.get('weights') or {}
  source = str(weights.get('source'))
  if source == 'random':
    text = f'random (seed {weights.get("seed")})'
  else:
    text = source
    if weights.get('file') and weights['file'] not in source:
      text += f' ({weights["file"]})'
  if weights.get('sha256'):
    text += f', sha256 {weights["sha256"][:12]}'
  preprocessing = describe.get('preprocessing') or {}
  resize = str(preprocessing.get('resize'))
  if resize == 'center-crop' and preprocessing.get('resize_shorter'):
    resize += f' (shorter side {preprocessing["resize_shorter"]} first)'
  return ModelInfo(
      model=str(describe.get('model')), layer=str(describe.get('layer')),
      pooling=str(describe.get('pooling')),
      precision=str(describe.get('precision')), weights=text,
      image_size=preprocessing.get('image_size'), resize=resize,
      feature_shape=tuple(describe.get('feature_shape') or ()),
      # A run of several layers: (layer, pooling, shape) for each.
      outputs=tuple((str(o.get('layer')), str(o.get('pooling')),
                     tuple(o.get('feature_shape') or ()))
                    for o in describe.get('outputs') or ()),
      memory_plan=_memory_plan_line(describe.get('memory_plan')))


def _memory_plan_line(recorded: Optional[dict]) -> str:
  """What ``--memory-budget`` planned, as the run's first lines said it."""
  if not recorded:
    return ''
  fields = {f.name for f in dataclasses.fields(memory_plan.MemoryPlan)}
  try:
    return memory_plan.MemoryPlan(
        **{k: v for k, v in recorded.items() if k in fields}).line()
  except TypeError:  # a manifest from another version of featurize
    return str(recorded)


def _error_notes(manifest_errors: Optional[int], tally: ErrorTally,
                 what: str) -> List[str]:
  notes = []
  if manifest_errors is not None and tally.lines != manifest_errors:
    notes.append(f'the {what} counts {manifest_errors} errors but its error '
                 f'files hold {tally.lines} lines')
  if tally.unreadable:
    notes.append(f'not JSON: {count_of(tally.unreadable, "error line")} '
                 '(cut short?)')
  return notes


def _leftover_note(leftovers: Optional[Leftovers]) -> List[str]:
  if not leftovers or not leftovers.folders:
    return []
  return [f'{count_of(leftovers.folders, "temporary folder")} '
          f'({TEMP_PREFIX}*) left by a run that did not finish (the next '
          'run into this folder deletes them)']


def summarise_run(path: str, manifest: dict, has_success: bool,
                  tally: ErrorTally, leftovers: Optional[Leftovers] = None,
                  lock_note: Optional[str] = None) -> Summary:
  """The summary of a run's output folder that holds a manifest.

  Args:
    path: The output folder.
    manifest: Its ``manifest.json``.
    has_success: Whether ``_SUCCESS`` is there.
    tally: The manifest's error files, read.
    leftovers: What unfinished runs left beside it, if anything.
    lock_note: Who holds the folder's lock, if anyone.
  """
  counts = manifest.get('counts') or {}
  errors = counts.get('errors')
  if manifest.get('status') == 'too_many_errors':
    status = FAILED
    share = (f', {errors / counts["images_in"]:.1%}'
             if counts.get('images_in') else '')
    detail = (f'FAILED: too many errors ({errors} of '
              f'{counts.get("images_in")} images{share}); no _SUCCESS, so '
              'readers that wait for it skip this output')
  elif has_success:
    status, detail = SUCCEEDED, 'succeeded (_SUCCESS present)'
  else:
    status = UNFINISHED
    detail = ('UNFINISHED: manifest.json written but no _SUCCESS (killed '
              'while finishing?)')
  notes = _error_notes(errors, tally, 'manifest')
  notes += _leftover_note(leftovers)
  if lock_note:
    notes.append(lock_note)
  return Summary(
      path=path, kind='run', status=status, status_detail=detail,
      images_in=counts.get('images_in'), features=counts.get('features'),
      errors=errors, model=model_info(manifest),
      input_shards=len(manifest.get('input_shards') or ()),
      input_pattern=(manifest.get('input') or {}).get('pattern'),
      feature_files=tuple(FileCount(s['path'], s['records'])
                          for s in manifest.get('feature_shards') or ()),
      error_files=tuple(FileCount(s['path'], s['records'])
                        for s in manifest.get('error_shards') or ()),
      error_groups=tally.groups(), error_lines_read=tally.lines,
      unreadable_lines=tally.unreadable, notes=tuple(notes))


def version_files(manifest: dict, kind: str) -> Tuple[FileCount, ...]:
  """A dataset version's files of one kind, with their record counts."""
  return tuple(FileCount(f['path'], f['records'])
               for entry in manifest.get('shards') or ()
               for f in entry['files'][kind])


def summarise_version(root: str, manifest: dict, latest: str,
                      tally: ErrorTally,
                      lock_note: Optional[str] = None) -> Summary:
  """The summary of one version of a dataset.

  Args:
    root: The dataset root.
    manifest: The version's manifest.
    latest: The version ``LATEST`` names.
    tally: The version's error files, read.
    lock_note: Who holds the dataset's lock, if anyone.
  """
  counts = manifest.get('counts') or {}
  name = manifest['version']
  if name == latest:
    detail = f'published, version {name} (LATEST)'
  else:
    detail = f'published, version {name} (not the latest: LATEST is {latest})'
  notes = _error_notes(counts.get('errors'), tally, 'version\'s manifest')
  if lock_note:
    notes.append(lock_note)
  return Summary(
      path=root, kind='dataset', status=SUCCEEDED, status_detail=detail,
      images_in=counts.get('images_in'), features=counts.get('features'),
      errors=counts.get('errors'),
      model=model_info(manifest.get('describe') or {}),
      input_shards=counts.get('shards'),
      input_pattern=manifest.get('input_pattern'),
      feature_files=version_files(manifest, 'features'),
      error_files=version_files(manifest, 'errors'),
      error_groups=tally.groups(), error_lines_read=tally.lines,
      unreadable_lines=tally.unreadable,
      version=VersionInfo(
          version=name, latest=latest, parent=manifest.get('parent'),
          created_at=str(manifest.get('created_at')),
          model_fingerprint=str(manifest.get('model_fingerprint')),
          shards_processed=counts.get('shards_processed', 0),
          images_processed=counts.get('images_processed', 0)),
      notes=tuple(notes))


def summarise_leftovers(path: str, leftovers: Leftovers, tally: ErrorTally,
                        lock_note: Optional[str] = None) -> Summary:
  """The summary of a folder where a run started but wrote no manifest.

  Its files hold what finished bundles wrote (in temporary folders, or
  renamed by a publish step that did not finish); retried bundles may
  have left duplicates, so the counts are what is there, not what the run
  would have published.
  """
  counted = [f.records for f in leftovers.feature_files if f.records >= 0]
  features = (sum(counted) if len(counted) == len(leftovers.feature_files)
              else None)
  notes = [f'left behind: {count_of(leftovers.folders, "temporary folder")} '
           f'({TEMP_PREFIX}*), '
           f'{count_of(len(leftovers.feature_files), "feature file")}'
           + ('' if features is not None else ' (remote: records not counted)')
           + f', {count_of(len(leftovers.error_files), "error file")}; the '
           'counts above are of complete records there, duplicates of '
           'retried bundles included']
  if tally.unreadable:
    notes.append(f'not JSON: {count_of(tally.unreadable, "error line")} '
                 '(cut short by a kill?)')
  if lock_note:
    notes.append(lock_note)
  return Summary(
      path=path, kind='leftovers', status=UNFINISHED,
      status_detail=('UNFINISHED: a run started here but never wrote its '
                     'manifest (killed, or still running)'),
      features=features, errors=tally.lines, feature_files=(),
      error_files=(), error_groups=tally.groups(),
      error_lines_read=tally.lines, unreadable_lines=tally.unreadable,
      notes=tuple(notes))


def summarise_unpublished(root: str,
                          lock_note: Optional[str] = None) -> Summary:
  """The summary of a dataset root with versions staged or written but
  no ``LATEST``: its first refresh is running, or was killed."""
  return Summary(
      path=root, kind='dataset', status=UNFINISHED,
      status_detail=('UNFINISHED: a dataset with no published version yet '
                     '(no LATEST): its first refresh is running or was '
                     'killed; the next refresh cleans up'),
      notes=(lock_note,) if lock_note else ())


def _number(value: Optional[int]) -> str:
  return '?' if value is None else f'{value:,}'


def count_of(count: Optional[int], noun: str) -> str:
  """``1 error``, ``1,234 errors``, ``? errors`` (where not known)."""
  return f'{_number(count)} {noun}{"" if count == 1 else "s"}'


def _files_lines(title: str, files: Tuple[FileCount, ...], unit: str,
                 width: int) -> List[str]:
  total = sum(f.records for f in files)
  lines = [f'{title}: {len(files)} ({count_of(total, unit)})']
  for f in files[:FILES_LISTED]:
    lines.append(f'  {f.path:<{width}}  {f.records:>9,}')
  if len(files) > FILES_LISTED:
    rest = files[FILES_LISTED:]
    records = [f.records for f in rest]
    lines.append(f'  ... and {len(rest)} more ({min(records):,} to '
                 f'{max(records):,} {unit}s each)')
  return lines


def _error_lines(summary: Summary) -> List[str]:
  if not summary.error_groups:
    return ['errors by stage and type: none']
  lines = [f'errors by stage and type '
           f'({count_of(summary.error_lines_read, "line")}, '
           f'{count_of(len(summary.error_groups), "group")}):']
  stage_width = max(len('stage'), *(len(g.stage) for g in summary.error_groups))
  type_width = max(len('error_type'),
                   *(len(g.error_type) for g in summary.error_groups))
  lines.append(f'  {"count":>7}  {"stage":<{stage_width}}  '
               f'{"error_type":<{type_width}}  examples')
  for group in summary.error_groups:
    more = ', ...' if group.count > len(group.examples) else ''
    lines.append(f'  {group.count:>7,}  {group.stage:<{stage_width}}  '
                 f'{group.error_type:<{type_width}}  '
                 f'{", ".join(group.examples)}{more}')
  return lines


def format_report(summary: Summary) -> str:
  """The text report: counts and status, model, files, errors, notes."""
  what = {'run': 'run output', 'dataset': 'dataset',
          'leftovers': 'run output'}[summary.kind]
  lines = [f'featurize {what} {summary.path}']
  rows = [('status', summary.status_detail)]
  if summary.version:
    v = summary.version
    rows += [('parent', v.parent or 'none (first version)'),
             ('created', v.created_at),
             ('model fingerprint', v.model_fingerprint)]
  share = summary.error_share
  # A dataset with no version yet has no counts at all.
  has_counts = summary.errors is not None
  if summary.images_in is not None:
    rows.append(('images in', _number(summary.images_in)))
  if has_counts:
    rows += [('features', _number(summary.features)),
             ('errors', _number(summary.errors) + (
                 f' ({share:.1%} of images in)' if share is not None
                 else ''))]
  if summary.model:
    m = summary.model
    rows += [('model', f'{m.model} {m.layer}, {m.pooling} pooling, '
                       f'{m.precision}'),
             ('weights', m.weights),
             ('preprocessing', f'{m.image_size}x{m.image_size}, {m.resize}')]
    if m.outputs:
      rows += [(f'layer {layer}', f'{pooling} pooling, shape {list(shape)}')
               for layer, pooling, shape in m.outputs]
    else:
      rows.append(('feature shape', str(list(m.feature_shape))))
    if m.memory_plan:
      rows.append(('memory', m.memory_plan))
  if summary.input_shards is not None:
    text = f'{summary.input_shards:,} shards'
    if summary.version:
      text += (f' ({summary.version.shards_processed:,} read by this '
               f'version: {summary.version.images_processed:,} images; the '
               'others reused)')
    if summary.input_pattern:
      text += f', from {summary.input_pattern}'
    rows.append(('input', text))
  width = max(len(name) for name, _ in rows)
  lines += [f'  {name:<{width}}  {value}' for name, value in rows]
  if summary.model is not None:  # Files are as a manifest lists them.
    listed = (summary.feature_files[:FILES_LISTED] +
              summary.error_files[:FILES_LISTED])
    width = max((len(f.path) for f in listed), default=0)
    lines += [''] + _files_lines('feature files', summary.feature_files,
                                 'record', width)
    lines += _files_lines('error files', summary.error_files, 'line', width)
  if has_counts:
    lines += [''] + _error_lines(summary)
  if summary.notes:
    lines += [''] + [f'note: {note}' for note in summary.notes]
  return '\n'.join(lines)
