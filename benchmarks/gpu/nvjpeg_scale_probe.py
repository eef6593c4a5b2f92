"""Whether nvJPEG's hardware batch decoder honours a scale factor
(``nvjpeg_direct``): decodes into a zeroed buffer and reports how many
bytes it wrote against the full and the scaled size, for each libnvjpeg
found, output format, and with fresh parameters (ROI reset) per image.
A diagnostic for the GPU machine: ``python -m benchmarks.gpu.nvjpeg_scale_probe``."""
import ctypes
import io
import sys

import torch

from tests import image_zoo
from transforms.gpu import nvjpeg_direct as nd

FORMATS = {'rgb': (3, 3), 'rgbi': (5, 1), 'yuv': (1, 3), 'y': (2, 1)}


def jpeg(w, h, sub):
  out = io.BytesIO()
  image_zoo.photo().convert('RGB').resize((w, h)).save(
      out, 'JPEG', quality=90, subsampling=sub)
  return out.getvalue()


def probe(path):
  nd._LIBRARY = None  # pylint: disable=protected-access
  real = nd.library_candidates
  nd.library_candidates = lambda: [path]
  try:
    lib = nd._library()  # pylint: disable=protected-access
  finally:
    nd.library_candidates = real
  version = [ctypes.c_int() for _ in range(3)]
  for prop in range(3):
    lib.nvjpegGetProperty(prop, ctypes.byref(version[prop]))
  print(path, 'nvjpeg', [v.value for v in version], flush=True)
  handle = ctypes.c_void_p()
  nd._check(lib.nvjpegCreateEx(3, None, None, 0, ctypes.byref(handle)), 'c')
  state = ctypes.c_void_p()
  lib.nvjpegJpegStateCreate(handle, ctypes.byref(state))
  for w, h in ((1024, 768), (2048, 1536)):
    data = jpeg(w, h, 2)
    for fmt, (code, planes) in FORMATS.items():
      for scale in (1, 2, 4):
        params = ctypes.c_void_p()
        lib.nvjpegDecodeParamsCreate(handle, ctypes.byref(params))
        lib.nvjpegDecodeParamsSetOutputFormat(params, code)
        lib.nvjpegDecodeParamsSetROI(params, 0, 0, -1, -1)
        s1 = lib.nvjpegDecodeParamsSetScaleFactor(
            params, nd._SCALE_FACTORS[scale])
        buf = torch.zeros(3 * h * w + 4096, dtype=torch.uint8, device='cuda')
        img = (nd._Image * 1)()
        sh, sw = nd.output_shape(w, h, scale)
        if fmt == 'rgbi':
          img[0].channel[0] = buf.data_ptr()
          img[0].pitch[0] = 3 * sw
        else:
          for c in range(planes):
            ch, cw = (sh, sw) if (fmt != 'yuv' or c == 0) else (
                (sh + 1) // 2, (sw + 1) // 2)
            img[0].channel[c] = buf.data_ptr() + c * h * w
            img[0].pitch[c] = cw
        lib.nvjpegDecodeBatchedInitialize(handle, state, 1, 1, code)
        status = lib.nvjpegDecodeBatchedEx(
            handle, state, (ctypes.c_char_p * 1)(data),
            (ctypes.c_size_t * 1)(len(data)), img,
            (ctypes.c_void_p * 1)(params.value), None)
        torch.cuda.synchronize()
        written = int((buf != 0).sum())
        print(f'  {w}x{h} {fmt} 1/{scale}: set {s1} status {status} wrote '
              f'{written} bytes; full plane {h * w}, scaled plane {sh * sw}',
              flush=True)


def main():
  paths = sys.argv[1:] or [c for c in nd.library_candidates()
                           if c.startswith('/')]
  for path in paths:
    try:
      probe(path)
    except Exception as e:  # pylint: disable=broad-except
      print(path, 'failed:', type(e).__name__, e, flush=True)


if __name__ == '__main__':
  main()
