#!/usr/bin/env bash
# Sets up a fresh Debian machine (as root) for loraops and builds it:
#   Debian packages: a compiler, CMake, Ninja, OpenBLAS (the CPU vendor path), GoogleTest;
#   a virtual environment .venv with requirements-dev.txt;
#   the package, installed into .venv from a persistent build dir (build/py) that also holds the
#   C++ test binaries. The CUDA backend is built when nvcc is found (/usr/local/cuda or PATH).
# Re-running it is cheap: packages already there are skipped, the build is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(g++ cmake ninja-build libopenblas-openmp-dev libgtest-dev python3-venv)
missing=()
for p in "${debs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages ${missing[*]} and not root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements-dev.txt
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH"
# The cuDNN frontend's headers (header-only; the vendor attention path) from PyPI's wheel, pinned,
# unpacked into build/deps: only where CUDA is, and a failed download only leaves that path out.
FE=build/deps/cudnn_frontend
if command -v nvcc >/dev/null && [ ! -f "$FE/include/cudnn_frontend.h" ]; then
  rm -rf "$FE" && mkdir -p "$FE"
  if .venv/bin/python -m pip download -q --no-deps -d "$FE/wheel" nvidia-cudnn-frontend==1.32.0; then
    .venv/bin/python -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith('include/')])" "$FE"/wheel/*.whl "$FE"
  else
    echo "setup: no cuDNN frontend headers (download failed): no vendor attention" >&2
  fi
fi
# CUTLASS's headers (header-only; the folded LoRA GEMM) from PyPI's nvidia-cutlass, pinned, into
# build/deps/cutlass: only where CUDA is; a failed download leaves the vendor composition in its place.
if command -v nvcc >/dev/null && ! bash scripts/fetch_cutlass.sh >/dev/null; then
  echo "setup: no CUTLASS headers (download failed): custom lora_forward above 64 rows runs the vendor composition" >&2
fi
echo "setup: building loraops (build/py)" >&2
.venv/bin/python -m pip install -q --no-build-isolation --no-deps \
  -C build-dir=build/py -C cmake.define.LORAOPS_BUILD_TESTS=ON .
