#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs every test: the C++ suite (CTest; GPU tests skip without a
# GPU) and the Python suite (pytest; torch and gpu markers skip without them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ctest --test-dir build/py --output-on-failure -j 2
# From outside the source tree, so the installed package (not python/loraops) is imported.
(cd /tmp && "$OLDPWD/.venv/bin/python" -m pytest -q -rs "$OLDPWD/tests/python")
