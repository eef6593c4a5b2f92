"""How the GPU path uses a worker process's threads: one frozen object.

The defaults are the measured best on the benchmark's machine (an H100 or
H200 with 16 host cores; docs/gpu.md, "Tuning"), and a run never needs
others. The GPU benchmark passes others to measure them, through
``FEATURIZE_GPU_SETTINGS`` (a JSON object of these fields), which the
launcher reads once into the job's ``ModelConfig``; the workers get them
with the rest of the job.
"""
import dataclasses
import json
from typing import Mapping

SETTINGS_ENV = 'FEATURIZE_GPU_SETTINGS'


@dataclasses.dataclass(frozen=True)
class GpuSettings:
  """The GPU path's thread settings.

  Attributes:
    prepare_threads: Helper threads per DoFn preparing batches in a
      process that runs its own model: one batch's nvJPEG decode, which
      gives up the GIL, overlaps another's resize packing, which holds
      it, while a third batch runs the model. (With ``--large-model`` the
      helper threads only wait on the server: one per batch in flight.)
    cpu_decode_threads: Threads of a process's CPU decoder (progressive
      JPEGs, other formats, CMYK...); 0: the process's share of the
      machine's cores.
    switch_interval_s: Python's GIL switch interval in a process that
      decodes on a GPU (``sys.setswitchinterval``; Python's default is
      0.005). nvJPEG's batched decode gives the GIL up and takes it back
      many times a batch, each time waiting for a busy thread to reach
      its switch: at Python's default, one busy thread beside it cuts its
      rate by a factor of about 25, at this one by about 2.
  """
  prepare_threads: int = 2
  cpu_decode_threads: int = 0
  switch_interval_s: float = 0.0001

  def __post_init__(self):
    if self.prepare_threads < 1 or self.cpu_decode_threads < 0:
      raise ValueError(f'{SETTINGS_ENV}: prepare_threads must be 1 or more '
                       'and cpu_decode_threads 0 or more')
    if not 0 < self.switch_interval_s <= 1:
      raise ValueError(f'{SETTINGS_ENV}: switch_interval_s must be within '
                       '(0, 1]')


def from_environ(environ: Mapping[str, str]) -> GpuSettings:
  """The settings ``SETTINGS_ENV`` holds, else the defaults.

  Raises:
    ValueError: not a JSON object of ``GpuSettings``' fields and values.
  """
  text = environ.get(SETTINGS_ENV, '').strip()
  if not text:
    return GpuSettings()
  try:
    given = json.loads(text)
  except ValueError as e:
    raise ValueError(f'{SETTINGS_ENV} is not JSON: {e}') from e
  fields = {f.name for f in dataclasses.fields(GpuSettings)}
  if not isinstance(given, dict) or set(given) - fields:
    raise ValueError(f'{SETTINGS_ENV} must be a JSON object of '
                     f'{", ".join(sorted(fields))}; got {text!r}')
  return GpuSettings(**given)
