#!/usr/bin/env bash
# CUTLASS headers (pinned) from PyPI's nvidia-cutlass wheel into build/deps/cutlass/{include,
# tools/util/include} (scripts/setup.sh runs it where nvcc is). Never copied into the repo.
# With --device, also into .device/cutlass (git-ignored), which the device tool carries.
set -euo pipefail
cd "$(dirname "$0")/.."
D=build/deps/cutlass
if [ ! -f "$D/include/cutlass/cutlass.h" ]; then
  tmp=$(mktemp -d)
  .venv/bin/python -m pip download -q --no-deps -d "$tmp" nvidia-cutlass==4.2.0.0
  (cd "$tmp" && python3 -m zipfile -e nvidia_cutlass-*.whl x)
  mkdir -p "$D/tools/util"
  cp -r "$tmp/x/cutlass_library/source/include" "$D/"
  cp -r "$tmp/x/cutlass_library/source/tools/util/include" "$D/tools/util/"
  rm -rf "$tmp"
fi
if [ "${1:-}" = --device ]; then
  rm -rf .device/cutlass && mkdir -p .device && cp -r "$D" .device/cutlass
fi
echo "cutlass headers: $D"
