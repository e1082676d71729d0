#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the main job, `loraops bench` (on the GPU when there is one
# and the CUDA backend is built, else on the CPU). Arguments go to `loraops bench`;
# default: the seed suite, results in bench-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/loraops bench "$@"
