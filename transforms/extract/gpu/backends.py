"""Where a worker process's GPU batches run: the backends of
``ExtractOnDevice``.

The split is Beam's RunInference's, base and handler: the DoFn
(``on_device``) reads, routes and batches images, keeps batches in
flight and turns results into outputs; a backend loads what runs the
batches and runs them, behind one small interface (``DeviceBackend``):

* ``InProcess``: the process's own models and decoders (a
  ``runtime.DeviceRuntime``, one per process through Beam's
  ``shared.Shared``, like RunInference's model cache);
* ``Served``: ``--large-model``, one server process per machine owns the
  GPUs (``server``) and this process sends it batches.

A batch goes through two calls: ``prepare`` on a helper thread (the
decode, resize and model dispatch, or the server's whole call), then
``finish`` on the bundle's thread (waiting for the device's results).
"""
import time
from typing import Any, Callable, Optional, Protocol

from transforms.decode import imaging
from transforms.extract import backend, models
from transforms.extract.gpu import (batching, device_batches, gpu_slot,
                                    runtime, server)

# Batches in flight per GPU: one computing, one being prepared.
IN_FLIGHT_PER_DEVICE = 2


class DeviceBackend(Protocol):
  """What ``ExtractOnDevice``'s DoFn needs of where its batches run.

  Attributes:
    batch_size: Images per batch.
    in_flight: Batches the DoFn keeps submitted at most.
    helper_threads: Threads that run ``prepare``.
    load_millis: How long this process took to load the model, to report
      once; None where another thread or process loaded it.
  """
  batch_size: int
  in_flight: int
  helper_threads: int
  load_millis: Optional[int]

  def prepare(self, batch: batching.Batch) -> Any:
    """Starts a batch (on a helper thread): what ``finish`` takes."""

  def finish(self, prepared: Any) -> device_batches.BatchResult:
    """The batch's features and error lines (on the bundle's thread)."""


class InProcess:
  """The batches run on this process's own models, a replica per GPU,
  each batch on the next GPU in turn."""

  def __init__(self, loaded: runtime.DeviceRuntime,
               decode_config: imaging.DecodeConfig, prepare_threads: int,
               load_millis: Optional[int]):
    self._runtime = loaded
    self._decode_config = decode_config
    self.batch_size = loaded.model.batch_size
    self.in_flight = IN_FLIGHT_PER_DEVICE * len(loaded.decoders)
    self.helper_threads = min(self.in_flight, prepare_threads)
    self.load_millis = load_millis

  def prepare(self, batch: batching.Batch) -> Any:
    replica = self._runtime.next_replica()
    return device_batches.start_batch(
        batch, self._runtime.decoders[replica], self._runtime.model, replica,
        self._decode_config)

  def finish(self, prepared: Any) -> device_batches.BatchResult:
    return device_batches.result_of(*prepared)


class Served:
  """The batches run in the machine's server process; each helper thread
  waits on one call, so there is one per batch in flight."""

  def __init__(self, proxy: Any):
    self._server = proxy
    self.batch_size = proxy.batch_size()
    self.in_flight = IN_FLIGHT_PER_DEVICE * proxy.replicas()
    self.helper_threads = self.in_flight
    self.load_millis = proxy.take_load_millis()

  def prepare(self, batch: batching.Batch) -> device_batches.BatchResult:
    return self._server.run_batch(batch)  # the whole batch, finished

  def finish(self, prepared: device_batches.BatchResult
             ) -> device_batches.BatchResult:
    return prepared


def connect(model_config: models.ModelConfig,
            decode_config: imaging.DecodeConfig,
            acquire: Callable[[Callable[[], Any], str], Any]
            ) -> DeviceBackend:
  """The backend a worker process's DoFn sends its batches to.

  Args:
    model_config: The model; ``large_model`` picks the server.
    decode_config: How images are decoded and resized.
    acquire: ``shared.Shared().acquire``-like: ``acquire(load, tag)``
      returns the process's one object for ``tag``, calling ``load`` the
      first time.
  """
  if model_config.large_model:
    return Served(server.connect(model_config, decode_config))
  loads = []

  def load() -> runtime.DeviceRuntime:
    started = time.perf_counter()
    # Several GPUs: this process takes one, before CUDA starts here.
    gpu_slot.place_this_process(backend.worker_processes())
    loaded = runtime.load_runtime(model_config, decode_config)
    loads.append(int((time.perf_counter() - started) * 1e3))
    return loaded

  loaded = acquire(load, f'{model_config}|{decode_config}')
  # Reported by the thread that built it; the others share it.
  return InProcess(loaded, decode_config, model_config.gpu.prepare_threads,
                   loads[0] if loads else None)
