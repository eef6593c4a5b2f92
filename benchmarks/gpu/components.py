"""The GPU path's parts measured one by one, on the benchmark's profiles.

``python -m benchmarks.gpu.components --out DIR`` measures, on the
``imagenet`` and ``web`` profiles (``profiles``), what each part of the
GPU path can do alone, so that the end-to-end figures can be read
against them:

* how the header screen routes each profile (``routing``);
* nvJPEG through torchvision (batched ``decode_jpeg``) on the images
  routed to the device, in 1 to 8 processes at once (the GPU's hardware
  decoders are shared; processes decode in parallel);
* nvImageCodec (``nvidia-nvimgcodec-cu13``, where installed) on the same
  images, in 1 and 4 processes, and on a CUDA stream of the highest
  priority (``nvimgcodec_priority``);
* the ragged resize (``ragged_resize``) of a batch of 256 such images on
  the GPU, and its pixels against Pillow's rule on the CPU;
* the CPU decoder (``imaging.decode_image``) on the images routed to the
  CPU, in 1 to 16 threads of one process (Pillow releases the GIL);
* the model alone (bfloat16, batch 256) in 1, 2 and 4 processes sharing
  the GPU at once: what time-slicing one GPU between processes costs;
* with ``--beside-model D:M``, nvJPEG (torchvision's, and nvImageCodec's
  where installed) in D processes while the model runs in M others:
  whether the two slow each other down on one GPU;
* with ``--decoder-threads``, each decoder in one process driven by that
  many threads at once: whether a process can have more than one batch
  decoding (torchvision keeps one nvJPEG decoder a process behind a
  lock);
* with ``--mps N``, all of it through an NVIDIA MPS daemon of its own,
  planned as for a run of N worker processes (``mps.sharing``: from 8,
  each process on half the multiprocessors), as the pipeline shares
  the GPU.

Each figure is images per second over at least ``--seconds``; where
processes ran their loops on their own, also the CPU time their process
took per image (all its threads: ``cpu_us_per_image``), which is what
nvJPEG's batches cost the host (RESULTS.md, runs 19-22). Needs no
Beam (the GPU machine need not carry it): the images come straight from
``profiles``.
"""
import argparse
import json
import multiprocessing
import os
import sys
import threading
import time
from concurrent import futures
from typing import Callable, Dict, List, NamedTuple, Sequence, Union

import numpy as np

from benchmarks.gpu import profiles
from transforms.decode import imaging
from transforms.extract import backend
from pipeline.runners.local_gpu import mps, sharing
from transforms.extract.gpu import routing

CONFIG = imaging.DecodeConfig()


class Rate(NamedTuple):
  """What a timed loop did.

  Attributes:
    images_per_s: Images a second.
    cpu_us_per_image: The process's CPU time (every thread's) per image
      over the loop.
  """
  images_per_s: float
  cpu_us_per_image: float


def _timed(step: Callable[[], int], seconds: float) -> Rate:
  """The rate of ``step`` (which returns how many images it did)."""
  step()  # warm-up
  done, started, cpu = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - started < seconds:
    done += step()
  wall = time.perf_counter() - started
  return Rate(done / wall, (time.process_time() - cpu) * 1e6 / max(done, 1))


def _counting(seconds: float, stop: threading.Event) -> Callable[[], float]:
  """A thread that counts in pure Python until ``stop``: its rate while
  another thread decodes, over its rate alone, is the share of the time
  that the decoding thread leaves the GIL to others."""
  count = [0]

  def run():
    while not stop.is_set():
      count[0] += 1

  thread = threading.Thread(target=run, daemon=True)
  started = time.perf_counter()
  thread.start()

  def rate():
    stop.set()
    thread.join()
    return count[0] / (time.perf_counter() - started)

  return rate


def gil_left(step: Callable[[], int], seconds: float) -> Dict[str, float]:
  """Images/s of ``step`` and the share of the GIL it leaves to another
  Python thread meanwhile (1: releases it throughout)."""
  idle = _counting(seconds, threading.Event())
  time.sleep(min(1.0, seconds))
  alone = idle()
  busy = _counting(seconds, threading.Event())
  # The counting thread's CPU is in the process's: the rate alone here.
  images_per_s = _timed(step, seconds).images_per_s
  return {'images_per_s': round(images_per_s, 1),
          'gil_left_to_others': round(busy() / alone, 3)}


def _batches(datas: Sequence[bytes], size: int) -> List[List[bytes]]:
  return [list(datas[i:i + size]) for i in range(0, len(datas) - size + 1,
                                                  size)] or [list(datas)]


def _measure(batches, decode_batch, seconds, barrier, probe, threads=1):
  """Decodes ``batches`` in turn with ``decode_batch`` (which waits for
  the device); once warm, either probes the GIL (``gil_left``) or waits
  for the other processes at ``barrier`` and returns the ``Rate``; with
  ``threads`` > 1, that many threads decode at once (each its own
  batches) and the rate is theirs together."""
  turn = [0]
  lock = threading.Lock()

  def step():
    with lock:
      part = batches[turn[0] % len(batches)]
      turn[0] += 1
    decode_batch(part)
    return len(part)

  step()
  if probe:
    return gil_left(step, seconds)
  barrier.wait()
  if threads == 1:
    return _timed(step, seconds)
  started, cpu = time.perf_counter(), time.process_time()

  def loop(_):
    done = 0
    while time.perf_counter() - started < seconds:
      done += step()
    return done

  with futures.ThreadPoolExecutor(threads) as pool:
    done = sum(pool.map(loop, range(threads)))
  wall = time.perf_counter() - started
  return Rate(done / wall, (time.process_time() - cpu) * 1e6 / max(done, 1))


def _torchvision_worker(datas, batch, seconds, threads, barrier,
                        probe=False):
  # pylint: disable=import-outside-toplevel
  import torch
  from torchvision import io as tv_io
  tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]

  def decode_batch(part):
    tv_io.decode_jpeg(part, mode=tv_io.ImageReadMode.RGB, device='cuda')
    torch.cuda.synchronize()

  return _measure(_batches(tensors, batch), decode_batch, seconds, barrier,
                  probe, threads)


def _nvimgcodec_worker(datas, batch, seconds, threads, barrier,
                       probe=False, priority=False):
  # pylint: disable=import-outside-toplevel
  from nvidia import nvimgcodec

  def make():
    return nvimgcodec.Decoder(backends=[
        nvimgcodec.Backend(nvimgcodec.BackendKind.HW_GPU_ONLY),
        nvimgcodec.Backend(nvimgcodec.BackendKind.HYBRID_CPU_GPU),
        nvimgcodec.Backend(nvimgcodec.BackendKind.GPU_ONLY)])

  # A decoder (and a CUDA stream) of its own for each thread:
  # nvImageCodec's decoders keep their state; several may decode at once.
  mine = threading.local()

  def decode_batch(part):
    if not hasattr(mine, 'decoder'):
      import torch
      mine.decoder = make()
      # The highest priority (-1 is clamped to the device's range): CUDA
      # then schedules its kernels before those of the model's streams
      # that wait (a hint, not preemption).
      mine.stream = torch.cuda.Stream(priority=-1 if priority else 0)
    mine.decoder.decode(part, cuda_stream=mine.stream.cuda_stream)
    mine.stream.synchronize()

  return _measure(_batches(list(datas), batch), decode_batch, seconds,
                  barrier, probe, threads)


def _nvimgcodec_priority_worker(datas, batch, seconds, threads, barrier,
                                probe=False):
  """nvImageCodec on a stream of the highest priority."""
  return _nvimgcodec_worker(datas, batch, seconds, threads, barrier, probe,
                            priority=True)


def _model_worker(batch, seconds, processes, barrier) -> Rate:
  # pylint: disable=import-outside-toplevel
  from transforms.extract import backend
  sharing.share_gpus(processes)
  backend.select('gpu')
  import jax
  from transforms.extract import models
  from transforms.extract.gpu.device_model import DeviceModel, visible_devices
  device = visible_devices(False)[:1]
  model = DeviceModel(models.ModelConfig(
      weights='random', precision='bfloat16', batch_size=batch,
      max_batch_bytes=1 << 40, device='gpu'), device)
  pixels = jax.device_put(np.random.default_rng(0).integers(
      0, 256, (batch, 224, 224, 3), dtype=np.uint8), device[0])
  pending = []

  def step():
    pending.append(model(pixels, 0))
    if len(pending) > 2:
      pending.pop(0).block_until_ready()
    return batch

  step()
  barrier.wait()
  rate = _timed(step, seconds)
  for out in pending:
    out.block_until_ready()
  return rate


Summed = Union[float, Dict[str, float]]


def in_processes(target, processes: int, *args) -> Summed:
  """Runs ``target`` in ``processes`` fresh processes that start their
  timed loops together; returns their rates summed (``summed``)."""
  return together([(target, processes, args)])[0]


def summed(rates: Sequence[Union[float, Rate]]) -> Summed:
  """Processes' rates together: plain numbers summed; ``Rate``s as
  ``images_per_s`` summed and ``cpu_us_per_image`` averaged over the
  images."""
  if not rates or not all(isinstance(r, Rate) for r in rates):
    return round(sum(rates), 1)
  total = sum(r.images_per_s for r in rates)
  cpu = sum(r.images_per_s * r.cpu_us_per_image for r in rates) / (
      total or 1)
  return {'images_per_s': round(total, 1), 'cpu_us_per_image': round(cpu, 1)}


_BARRIER = None  # each pool process's barrier (``_keep_barrier``)


def _keep_barrier(barrier) -> None:
  global _BARRIER  # pylint: disable=global-statement
  _BARRIER = barrier


def _after_barrier(target, *args):
  return target(*args, _BARRIER)


def together(groups) -> List[Summed]:
  """Runs each ``(target, processes, args)`` group in fresh processes,
  all starting their timed loops at once (``target(*args, barrier)``
  waits at the barrier); returns each group's summed rate. Decoding
  beside the model is how the pipeline uses the GPU: this tells whether
  nvJPEG and the model slow each other down."""
  context = multiprocessing.get_context('spawn')
  total = sum(processes for _, processes, _ in groups)
  # The barrier goes to the processes as they start: a manager's proxy
  # would not do where Beam is loaded (its multi_process_shared replaces
  # multiprocessing's AutoProxy, which spawn then cannot pickle).
  barrier = context.Barrier(total)
  with futures.ProcessPoolExecutor(total, mp_context=context,
                                   initializer=_keep_barrier,
                                   initargs=(barrier,)) as pool:
    # Every task waits at the barrier, so each process takes one.
    runs = [[pool.submit(_after_barrier, target, *args)
             for _ in range(processes)]
            for target, processes, args in groups]
    return [summed([run.result() for run in group]) for group in runs]


def ragged_resize_check(datas: Sequence[bytes], batch: int,
                        seconds: float) -> Dict[str, float]:
  """Time of one batch's ragged resize on the GPU, and its pixels against
  Pillow's rule (``resample.apply_plan``) on the same decoded pixels."""
  # pylint: disable=import-outside-toplevel
  import torch
  from transforms.extract.gpu import (decoders, jpeg_header, orientation,
                                      resample)
  decoder = decoders.NvjpegDecoder(0, CONFIG, batch)
  part = list(datas[:batch])
  turns = [jpeg_header.screen(d, CONFIG.max_pixels).orientation for d in part]
  decoded = decoder.decode(part)
  items = [(p, t) for p, t in zip(decoded, turns) if p is not None]

  def step():
    decoder.resize_batch(items, []).block_until_ready()
    return len(items)

  rate = _timed(step, seconds).images_per_s
  out = np.asarray(decoder.resize_batch(items, []))
  worst = 0
  for index, (pixels, turn) in enumerate(items[:64]):
    upright = orientation.apply_numpy(
        pixels.permute(1, 2, 0).cpu().numpy(), turn)
    plan = resample.resize_plan(upright.shape[1], upright.shape[0], CONFIG)
    want = resample.apply_plan(np.ascontiguousarray(upright), plan)
    worst = max(worst, int(np.abs(out[index].astype(int) - want).max()))
  torch.cuda.synchronize()
  return {'images_per_s': round(rate, 1),
          'ms_per_batch': round(1e3 * len(items) / rate, 2),
          'max_difference_from_pillow_rule': worst}


def cpu_decode(datas: Sequence[bytes], threads: int,
               seconds: float) -> float:
  """Images/s of the CPU path's decoder in ``threads`` threads."""
  datas = list(datas)

  def one(data):
    try:
      imaging.decode_image(data, CONFIG)
    except imaging.ImageError:
      pass

  with futures.ThreadPoolExecutor(threads) as pool:

    def step():
      list(pool.map(one, datas))
      return len(datas)

    return round(_timed(step, seconds).images_per_s, 1)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument('--out', default='gpu-out')
  parser.add_argument('--data', default='/tmp/featurize-gpu-components')
  parser.add_argument('--distinct', type=int, default=1024)
  parser.add_argument('--seconds', type=float, default=3.0)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--processes', default='1,2,4,8')
  parser.add_argument('--model-processes', default='1,2,4')
  parser.add_argument('--threads', default='1,4,8,16')
  parser.add_argument('--profiles', default='imagenet,web')
  parser.add_argument('--codec-processes', default='1,4')
  parser.add_argument('--beside-model', default='',
                      help='nvJPEG (torchvision) in D processes while the '
                      'model runs in M, all at once: "D:M" pairs joined '
                      'by "," (8:4,8:8), on the first profile\'s images; '
                      '"D:M:T" drives each of nvImageCodec\'s D processes '
                      'from T threads.')
  parser.add_argument('--mps', type=int, default=0,
                      help='Run everything through an NVIDIA MPS daemon of '
                      'its own, planned as for a run of this many worker '
                      'processes (pipeline/runners/local_gpu/mps.py: 8 or more '
                      'hold each process to half the multiprocessors).')
  parser.add_argument('--decoder-threads', default='',
                      help='Threads driving each decoder at once in one '
                      'process, "," joined (2,4): whether a process can '
                      'decode more than one batch at a time.')
  args = parser.parse_args(argv)
  if not args.mps:
    return _measure_all(args)
  with mps.sharing(args.mps, say=print):
    return _measure_all(args)


def _measure_all(args) -> int:
  # Before JAX starts in this process: no preallocation, a small share.
  backend.select('gpu')
  os.makedirs(args.out, exist_ok=True)
  results = {'cpu_cores': len(os.sched_getaffinity(0)),
             'mps_share': os.environ.get(mps.SHARE_ENV, ''),
             'mps_pipe': os.environ.get(mps.PIPE_ENV, '')}

  def save():
    with open(os.path.join(args.out, 'components.json'), 'w') as f:
      json.dump(results, f, indent=1)
    print(json.dumps(results), flush=True)

  for name in args.profiles.split(','):
    started = time.perf_counter()
    with multiprocessing.get_context('spawn').Pool() as pool:
      datas = profiles.encode_all(
          profiles.draw_plans(name, args.distinct, 0), pool)
    routes = [routing.route(d, CONFIG) for d in datas]
    device = [d for d, r in zip(datas, routes) if r.on_device]
    cpu = [d for d, r in zip(datas, routes) if not r.on_device]
    shares = {}
    for r in routes:
      shares[r.category] = shares.get(r.category, 0) + 1 / len(routes)
    entry = results.setdefault(name, {})
    entry['generated_s'] = round(time.perf_counter() - started, 1)
    entry['routed'] = {k: round(v, 4) for k, v in sorted(shares.items())}
    save()
    entry['torchvision'] = {'one_process_gil': _torchvision_worker(
        device, args.batch, args.seconds, 1, None, probe=True)}
    save()
    for p in (int(x) for x in args.processes.split(',')):
      entry['torchvision'][p] = in_processes(
          _torchvision_worker, p, device, args.batch, args.seconds, 1)
      save()
    decoders_here = {'torchvision': _torchvision_worker}
    try:
      entry['nvimgcodec'] = {'one_process_gil': _nvimgcodec_worker(
          device, args.batch, args.seconds, 1, None, probe=True)}
      save()
      for p in (int(x) for x in args.codec_processes.split(',')):
        entry['nvimgcodec'][p] = in_processes(
            _nvimgcodec_worker, p, device, args.batch, args.seconds, 1)
        save()
      decoders_here['nvimgcodec'] = _nvimgcodec_worker
      decoders_here['nvimgcodec_priority'] = _nvimgcodec_priority_worker
    except Exception as e:  # pylint: disable=broad-except
      entry['nvimgcodec'] = f'not measured: {type(e).__name__}: {e}'
    for threads in (int(x) for x in args.decoder_threads.split(',') if x):
      for decoder, worker in decoders_here.items():
        if decoder == 'torchvision':
          continue  # one decoder a process, behind a lock (runs 19-22)
        entry.setdefault(f'{decoder}_threads', {})[threads] = in_processes(
            worker, 1, device, args.batch, args.seconds, threads)
        save()
    if args.beside_model and name == args.profiles.split(',')[0]:
      for decoder, worker in decoders_here.items():
        beside = entry.setdefault(f'{decoder}_beside_model', {})
        for pair in args.beside_model.split(','):
          decoding, models, threads = (
              [int(x) for x in pair.split(':')] + [1])[:3]
          if threads > 1 and decoder == 'torchvision':
            continue  # one decoder a process, behind a lock
          decoded, modelled = together([
              (worker, decoding, (device, args.batch, args.seconds,
                                  threads)),
              (_model_worker, models, (args.batch, args.seconds,
                                       decoding + models))])
          beside[pair] = {'decode': decoded, 'model': modelled}
          save()
    entry['ragged_resize'] = ragged_resize_check(device, args.batch,
                                                 args.seconds)
    save()
    entry['cpu_decode_of_cpu_routed'] = {
        t: cpu_decode(cpu, t, args.seconds)
        for t in (int(x) for x in args.threads.split(','))}
    save()
  results['model_bfloat16_batch'] = args.batch
  results['model_processes'] = {}
  for p in (int(x) for x in args.model_processes.split(',')):
    results['model_processes'][p] = in_processes(
        _model_worker, p, args.batch, args.seconds, p)
    save()
  return 0


if __name__ == '__main__':
  sys.exit(main())
