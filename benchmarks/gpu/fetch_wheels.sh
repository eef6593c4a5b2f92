#!/usr/bin/env bash
# Fills .whl/ with the wheels a GPU machine that has Python 3.12, jax
# (cuda13), torch, torchvision, numpy, Pillow, h5py and protobuf but no
# Beam or Keras lacks (docs/GPU_GROUNDWORK.md, section 4: 21 wheels, about
# 38 MiB). run_on_device.sh installs them there with --no-deps.
# Run here, in the repository root, with the project's venv.
#
# `fetch_wheels.sh codec` fills .whl-codec/ instead, for
# `run_on_device.sh components` (which needs no Beam): nvImageCodec and
# nvJPEG's library, to measure against torchvision, and Keras for the
# model's runs (28 MiB; the two sets together pass the device tool's
# 64 MiB a call, so a call carries one of them).
set -euo pipefail
cd "$(dirname "$0")/../.."
PIP=${PIP:-.venv/bin/pip}
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64"
if [ "${1:-}" = codec ]; then
  mkdir -p .whl-codec
  # shellcheck disable=SC2086
  "$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp $PLATFORMS -d .whl-codec \
    nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-nvjpeg==13.3.2.43 \
    keras==3.15.1 namex==0.1.0 optree==0.20.0 pyspng==0.1.4
  ls .whl-codec | wc -l
  du -sh .whl-codec
  exit 0
fi
mkdir -p .whl
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  --platform manylinux_2_5_x86_64 -d .whl \
  apache-beam==2.77.0 beartype==0.22.9 cffi==2.1.1 crc32c==2.9.post0 \
  cryptography==50.0.2 dnspython==2.9.2 fastavro==1.13.1 fasteners==0.20 \
  google-crc32c==1.9.0 httplib2==0.32.1 jsonpickle==4.1.4 keras==3.15.1 \
  namex==0.1.0 objsize==0.7.1 optree==0.20.0 proto-plus==1.29.0 \
  pycparser==3.12 pymongo==4.20.1 pytz==2026.6 zstandard==0.25.0 \
  pyspng==0.1.4
# py-spy (3 MiB) for the benchmark's --spy: where the host's cores go.
# shellcheck disable=SC2086
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp $PLATFORMS -d .whl py-spy==0.4.3
# PyPI has tfrecord only as an sdist: build its (pure Python) wheel here.
"$PIP" wheel -q --no-deps -w .whl tfrecord==1.14.6
ls .whl | wc -l
du -sh .whl
