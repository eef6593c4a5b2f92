#!/usr/bin/env bash
# The GPU tests and benchmark, in one call on the GPU machine (the device
# tool of this workplace; any machine with an NVIDIA GPU, Python 3.12,
# jax[cuda13], torch and torchvision will do).
#
# Before the call, on a machine with the project's venv:
#   python -m tests.gpu.reference .gpu-ref/reference.npz   # TF's features
#   bash benchmarks/gpu/fetch_wheels.sh   # what the GPU machine lacks, .whl/
# Then: bash benchmarks/gpu/run_on_device.sh [tests|bench|all] [bench args]
# (FEATURIZE_GPU_TEST_PATHS names the test files to run; tests/gpu if unset)
# or, with .whl-codec/ (fetch_wheels.sh codec) instead of .whl/:
#   bash benchmarks/gpu/run_on_device.sh components [components args]
# Logs and results go to $OUT (or ./gpu-out).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
mode=${1:-all}
shift || true
if ls .whl*/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl*/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
else
  export PYTHONPATH=$PWD
fi
# nvImageCodec's nvJPEG extension loads libnvjpeg from the nvidia-nvjpeg
# wheel's folder.
if [ -d /tmp/site/nvidia/nvjpeg/lib ]; then
  export LD_LIBRARY_PATH=/tmp/site/nvidia/nvjpeg/lib:${LD_LIBRARY_PATH:-}
fi
export FEATURIZE_GPU_TESTS=1 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
status=0
if [ "$mode" = components ]; then
  python3 -m benchmarks.gpu.components --out "$OUT" "$@" 2>&1 \
    | tee "$OUT/components.log"
  exit "${PIPESTATUS[0]}"
fi
KERAS_BACKEND=jax python3 -c 'import jax, torch, torchvision, keras, apache_beam as b; print("jax", jax.__version__, jax.devices(), "torch", torch.__version__, "torchvision", torchvision.__version__, "keras", keras.__version__, "beam", b.__version__)' 2>&1 | grep -v apitools
if [ "$mode" != bench ]; then
  # shellcheck disable=SC2086
  python3 -m pytest -q -s -p no:cacheprovider ${FEATURIZE_GPU_TEST_PATHS:-tests/gpu} 2>&1 \
    | tee "$OUT/gpu-tests.log" | grep -vE '^\s*$' | tail -60
  status=${PIPESTATUS[0]}
fi
if [ "$mode" != tests ]; then
  python3 -m benchmarks.gpu.run --out "$OUT/results" "$@" 2>&1 \
    | tee "$OUT/benchmark.log" | grep -v apitools
  status=$(( status || PIPESTATUS[0] ))
fi
exit $status
