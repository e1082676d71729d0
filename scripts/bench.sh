#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the main job, `loraops bench` (on the GPU when there is one
# and the CUDA backend is built, else on the CPU), with the same cases timed from C++ too
# (--cpp: loraops_bench, built with the tests in build/py) unless the arguments say otherwise
# (--emit-cases, --against, or a --cpp of their own). Arguments go to `loraops bench`;
# default: the seed suite, results in bench-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CPP=()
case " $* " in
  *" --cpp"*|*" --emit-cases"*|*" --against"*) ;;
  *) [ -x build/py/loraops_bench ] && CPP=(--cpp "$PWD/build/py/loraops_bench") ;;
esac
.venv/bin/loraops bench "${CPP[@]}" "$@"
