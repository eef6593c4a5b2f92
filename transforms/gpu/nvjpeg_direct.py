"""nvJPEG's hardware batch decoder, called directly through ctypes.

The GPU path decodes through torchvision's ``decode_jpeg`` by default. Its
nvJPEG use has limits that measurements on an H200 pointed at (RESULTS.md,
runs 19-23): one decoder a process behind one global lock, so a process
decodes one batch at a time; a CUDA stream of its own at the lowest
priority, so nvJPEG's kernels queue behind the model's; and each image's
header parsed three times on the host before nvJPEG parses it again.

nvImageCodec (``nvidia-nvimgcodec-cu13``) was measured instead and was
slower (15,466 images/s in 8 processes against torchvision's 22,315, run
23), and DALI is too large to carry. So this module calls ``libnvjpeg``
itself, the library torchvision loads, with the same hardware-backend call
(``nvjpegDecodeBatched``, planar RGB): the same pixels, bit for bit (GPU
test). Each thread gets its own decode state and CUDA stream, of normal or
high priority; the library handle is shared, which nvJPEG allows.

Not done: decoding large JPEGs reduced, as Pillow's draft does on the CPU
path. nvJPEG's ``nvjpegDecodeParamsSetScaleFactor`` ("works only with the
hardware decoder backend") returns success, but on the H200 with nvJPEG
13.0.1 and 13.3.2 the hardware batch decoder still wrote the full-size
rows (``benchmarks/gpu/nvjpeg_scale_probe.py``, run 23).

Nothing here runs without a GPU that has hardware JPEG decoders; the GPU
tests compare it with torchvision's decoder.
"""
import ctypes
import glob
import math
import os
import sys
import threading
from typing import Any, List, Optional, Sequence, Tuple

from transforms import imaging

# nvjpeg.h's values.
_BACKEND_HARDWARE = 3
_OUTPUT_RGB = 3
_MAX_COMPONENT = 4
_SCALE_FACTORS = {1: 0, 2: 1, 4: 2, 8: 3}  # nvjpegScaleFactor_t (the probe)
_CHANNELS = 3
# The stream priority of the decode: 'normal' (CUDA's default) or 'high'
# (the device's highest). Kernels in a higher-priority stream are
# scheduled before waiting ones of lower priority; this is a hint, not
# preemption. A benchmark seam until measured.
PRIORITY_ENV = 'FEATURIZE_GPU_DECODE_PRIORITY'
PRIORITIES = ('normal', 'high')


class _Image(ctypes.Structure):
  """nvjpegImage_t: a pointer and a pitch for each output plane."""
  _fields_ = [('channel', ctypes.c_void_p * _MAX_COMPONENT),
              ('pitch', ctypes.c_size_t * _MAX_COMPONENT)]


def library_candidates() -> List[str]:
  """Where libnvjpeg may be, in the order tried: the loader's own search
  (which finds the copy torchvision has loaded, by its name), then the
  copies that NVIDIA's and PyTorch's wheels put in site-packages."""
  names = ['libnvjpeg.so.13', 'libnvjpeg.so.12', 'libnvjpeg.so']
  patterns = ('nvidia/cu*/lib/libnvjpeg.so*', 'nvidia/nvjpeg/lib/libnvjpeg.so*',
              'torchvision.libs/libnvjpeg*.so*', 'torchvision/libnvjpeg*.so*',
              'torch/lib/libnvjpeg*.so*')
  for folder in sys.path:
    for pattern in patterns:
      names.extend(sorted(glob.glob(os.path.join(folder or '.', pattern))))
  return names


_LIBRARY = None
_LIBRARY_LOCK = threading.Lock()


def _library():
  """libnvjpeg with the argument types of the functions used here."""
  global _LIBRARY  # pylint: disable=global-statement
  with _LIBRARY_LOCK:
    if _LIBRARY is not None:
      return _LIBRARY
    errors = []
    for candidate in library_candidates():
      try:
        lib = ctypes.CDLL(candidate)
        break
      except OSError as e:
        errors.append(str(e))
    else:
      raise OSError('libnvjpeg not found: ' + '; '.join(errors[:3]))
    p, i, u = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint
    pp = ctypes.POINTER(ctypes.c_void_p)
    signatures = {
        'nvjpegGetProperty': (i, ctypes.POINTER(i)),
        'nvjpegCreateEx': (i, p, p, u, pp),
        'nvjpegJpegStateCreate': (p, pp),
        'nvjpegJpegStreamCreate': (p, pp),
        'nvjpegDecodeParamsCreate': (p, pp),
        'nvjpegDecodeParamsSetOutputFormat': (p, i),
        'nvjpegDecodeParamsSetScaleFactor': (p, i),
        'nvjpegDecodeParamsSetROI': (p, i, i, i, i),
        'nvjpegGetImageInfo': (p, ctypes.c_char_p, ctypes.c_size_t,
                               ctypes.POINTER(i), ctypes.POINTER(i),
                               ctypes.POINTER(i), ctypes.POINTER(i)),
        'nvjpegJpegStreamParseHeader': (p, ctypes.c_char_p, ctypes.c_size_t,
                                        p),
        'nvjpegDecodeBatchedSupportedEx': (p, p, p, ctypes.POINTER(i)),
        'nvjpegDecodeBatchedInitialize': (p, p, i, i, i),
        'nvjpegDecodeBatchedEx': (p, p, ctypes.POINTER(ctypes.c_char_p),
                                  ctypes.POINTER(ctypes.c_size_t),
                                  ctypes.POINTER(_Image), pp, p),
        'nvjpegDecodeBatched': (p, p, ctypes.POINTER(ctypes.c_char_p),
                                ctypes.POINTER(ctypes.c_size_t),
                                ctypes.POINTER(_Image), p),
    }
    for name, argtypes in signatures.items():
      function = getattr(lib, name)
      function.argtypes = argtypes
      function.restype = ctypes.c_int
    _LIBRARY = lib
    return lib


def _check(status: int, what: str) -> None:
  if status != 0:
    raise RuntimeError(f'{what} failed: nvjpegStatus {status}')


def output_shape(width: int, height: int, scale: int) -> Tuple[int, int]:
  """``(height, width)`` of a JPEG decoded at 1/``scale``: rounded up, as
  libjpeg's DCT scaling (Pillow's draft) rounds (what the probe expects)."""
  return math.ceil(height / scale), math.ceil(width / scale)


class _ThreadState:
  """What one thread decodes with: nvJPEG's decode state and a stream."""

  def __init__(self, lib, handle, torch, device, priority: str):
    self.state = ctypes.c_void_p()
    _check(lib.nvjpegJpegStateCreate(handle, ctypes.byref(self.state)),
           'nvjpegJpegStateCreate')
    # torch maps -1 to the device's highest priority.
    self.stream = torch.cuda.Stream(
        device, priority=-1 if priority == 'high' else 0)


class DirectDecoder:
  """Baseline JPEGs to planar RGB CUDA tensors on nvJPEG's hardware
  decoders, at their stored size and orientation.

  ``decode`` may be called from several threads at once; each has its own
  nvJPEG state and stream, so their batches decode side by side.
  """

  def __init__(self, device_index: int, config: imaging.DecodeConfig,
               priority: Optional[str] = None):
    self._priority = priority or os.environ.get(PRIORITY_ENV, 'normal')
    if self._priority not in PRIORITIES:
      raise ValueError(f'{PRIORITY_ENV} must be one of '
                       f'{", ".join(PRIORITIES)}, not {self._priority!r}')
    # pylint: disable=import-outside-toplevel
    import torch
    self._torch = torch
    self._device = torch.device('cuda', device_index)
    self._config = config
    self._lib = _library()
    self._handle = ctypes.c_void_p()
    _check(self._lib.nvjpegCreateEx(_BACKEND_HARDWARE, None, None, 0,
                                    ctypes.byref(self._handle)),
           'nvjpegCreateEx (hardware backend)')
    self._mine = threading.local()

  def _thread(self) -> _ThreadState:
    state = getattr(self._mine, 'state', None)
    if state is None:
      with self._torch.cuda.device(self._device):
        state = _ThreadState(self._lib, self._handle, self._torch,
                             self._device, self._priority)
      self._mine.state = state
    return state

  def stored_size(self, data: bytes) -> Optional[Tuple[int, int]]:
    """``(width, height)`` from the JPEG's header, or None."""
    channels, subsampling = ctypes.c_int(), ctypes.c_int()
    widths = (ctypes.c_int * _MAX_COMPONENT)()
    heights = (ctypes.c_int * _MAX_COMPONENT)()
    status = self._lib.nvjpegGetImageInfo(
        self._handle, data, len(data), ctypes.byref(channels),
        ctypes.byref(subsampling), widths, heights)
    if status != 0 or widths[0] < 1 or heights[0] < 1:
      return None
    return widths[0], heights[0]

  def decode_batch(self, datas: Sequence[bytes]) -> List[Optional[Any]]:
    """Decodes the JPEGs in one call of nvJPEG's batch decoder.

    Returns:
      For each, a ``(3, H, W)`` uint8 CUDA tensor (planar RGB, stored
      size and orientation), or None where its header is not one nvJPEG
      reads.

    Raises:
      RuntimeError: nvJPEG refused the batch (the caller decodes each
        alone to find which).
    """
    torch, lib = self._torch, self._lib
    thread = self._thread()
    sizes = [self.stored_size(data) for data in datas]
    kept = [i for i, size in enumerate(sizes) if size is not None]
    out: List[Optional[Any]] = [None] * len(datas)
    if not kept:
      return out
    shapes = [(sizes[i][1], sizes[i][0]) for i in kept]
    total = sum(_CHANNELS * h * w for h, w in shapes)
    flat = torch.empty(total, dtype=torch.uint8, device=self._device)
    # The memory may have served work still queued on torch's stream.
    thread.stream.wait_stream(torch.cuda.current_stream(self._device))
    base = flat.data_ptr()
    images = (_Image * len(kept))()
    offset = 0
    views = []
    for slot, (height, width) in enumerate(shapes):
      plane = height * width
      for c in range(_CHANNELS):
        images[slot].channel[c] = base + offset + c * plane
        images[slot].pitch[c] = width
      views.append(flat[offset:offset + _CHANNELS * plane].view(
          _CHANNELS, height, width))
      offset += _CHANNELS * plane
    kept_datas = [datas[i] for i in kept]
    pointers = (ctypes.c_char_p * len(kept))(*kept_datas)
    lengths = (ctypes.c_size_t * len(kept))(*[len(d) for d in kept_datas])
    _check(lib.nvjpegDecodeBatchedInitialize(self._handle, thread.state,
                                             len(kept), 1, _OUTPUT_RGB),
           'nvjpegDecodeBatchedInitialize')
    _check(lib.nvjpegDecodeBatched(
        self._handle, thread.state, pointers, lengths, images,
        ctypes.c_void_p(thread.stream.cuda_stream)), 'nvjpegDecodeBatched')
    thread.stream.synchronize()
    for slot, index in enumerate(kept):
      out[index] = views[slot]
    return out


def available(device_index: int = 0) -> str:
  """'' where nvJPEG's hardware batch decoder can be used on this
  device, otherwise why not."""
  try:
    DirectDecoder(device_index, imaging.DecodeConfig())
  except Exception as e:  # pylint: disable=broad-except
    return f'{type(e).__name__}: {e}'
  return ''
