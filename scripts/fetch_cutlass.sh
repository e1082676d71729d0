#!/usr/bin/env bash
# CUTLASS headers (pinned) from PyPI's nvidia-cutlass wheel into build/deps/cutlass/{include,
# tools/util/include} (scripts/setup.sh runs it where nvcc is). Never copied into the repo.
# With --device, also into .device/cutlass (git-ignored), which the device tool carries.
set -euo pipefail
cd "$(dirname "$0")/.."
D=build/deps/cutlass
if [ ! -f "$D/tools/util/include/cutlass/util/packed_stride.hpp" ]; then
  # Unpacked beside $D and moved into place whole: a failed step leaves no half tree for CMake.
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  .venv/bin/python -m pip download -q --no-deps -d "$tmp" nvidia-cutlass==4.2.0.0
  (cd "$tmp" && python3 -m zipfile -e nvidia_cutlass-*.whl x)
  mkdir -p "$tmp/deps/tools/util"
  mv "$tmp/x/cutlass_library/source/include" "$tmp/deps/"
  mv "$tmp/x/cutlass_library/source/tools/util/include" "$tmp/deps/tools/util/"
  rm -rf "$D" && mkdir -p "$(dirname "$D")" && mv "$tmp/deps" "$D"
fi
if [ "${1:-}" = --device ]; then
  rm -rf .device/cutlass && mkdir -p .device && cp -r "$D" .device/cutlass
fi
echo "cutlass headers: $D"
