"""``--large-model`` on gpu: one process per machine owns its GPUs.

Beam's ``MultiProcessShared`` (what RunInference's ``large_model`` uses)
starts that process the first time a worker process asks for it, and
every worker process of the machine then sends it batches through a
proxy. The worker processes read, route, run the CPU decoder and write,
in parallel on the machine's cores; the server process only decodes with
nvJPEG, resizes and runs VGG16, in one CUDA context per GPU. Two things
follow: no worker's busy Python thread holds the GIL that nvJPEG's
decode needs (``settings.GpuSettings.switch_interval_s`` says what that
costs), and the GPUs are not time-sliced between processes' contexts.

What crosses the process boundary, pickled, is a ``batching.Batch`` (the
encoded device images and the CPU decoder's model-sized rows) and a
``device_batches.BatchResult``.
"""
import functools
import hashlib
import threading
import time
from typing import Optional

from apache_beam.utils import multi_process_shared

from transforms.decode import imaging
from transforms.extract import models
from transforms.extract.gpu import batching, device_batches, runtime


class DeviceServer:
  """The model and decoders of every GPU, for the proxies of the worker
  processes. Its methods run on the server's threads, one per caller's
  thread, so that batches from several workers overlap on the GPUs."""

  def __init__(self, model_config: models.ModelConfig,
               decode_config: imaging.DecodeConfig):
    started = time.perf_counter()
    self._runtime = runtime.load_runtime(model_config, decode_config)
    self._decode_config = decode_config
    self._load_millis: Optional[int] = int(
        (time.perf_counter() - started) * 1e3)
    self._lock = threading.Lock()

  def take_load_millis(self) -> Optional[int]:
    """How long the model took to load, for the first caller only: the
    worker that reports it in Beam's metrics (one load per machine)."""
    with self._lock:
      millis, self._load_millis = self._load_millis, None
    return millis

  def batch_size(self) -> int:
    return self._runtime.model.batch_size

  def replicas(self) -> int:
    return len(self._runtime.decoders)

  def run_batch(self, batch: batching.Batch) -> device_batches.BatchResult:
    """Decodes, resizes and runs one batch on the next GPU; waits for
    its features."""
    replica = self._runtime.next_replica()
    return device_batches.run_batch(
        batch, self._runtime.decoders[replica], self._runtime.model, replica,
        self._decode_config)


def tag(model_config: models.ModelConfig,
        decode_config: imaging.DecodeConfig) -> str:
  """The server's name on this machine: one per model and decode rules
  (Beam names its lock and address files after it)."""
  digest = hashlib.sha256(
      repr((model_config, decode_config)).encode()).hexdigest()[:16]
  return f'featurize-gpu-server-{digest}'


def connect(model_config: models.ModelConfig,
            decode_config: imaging.DecodeConfig):
  """A proxy of this machine's ``DeviceServer``, started if need be."""
  return multi_process_shared.MultiProcessShared(
      functools.partial(DeviceServer, model_config, decode_config),
      tag=tag(model_config, decode_config), always_proxy=True,
      spawn_process=True).acquire()
