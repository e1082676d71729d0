#!/usr/bin/env bash
# An interleaved A/B of source files on the GPU machine, in one device call: the working tree's
# version ("new") against an older one ("old"), each built and timed twice in turns (new, old,
# new, old), so that both see the same machine, clocks and case order (absolute figures move
# between machines and with the order of loraops_latency's cases; NOTES.md, session 19).
#
#   here:      scripts/device_ab.sh --prepare REV path...   (copies REV's versions to .device/ab_old/)
#   on device: LATENCY_FILTER='a|b' TESTS='Suite.*' scripts/device_ab.sh   (run with carry .device)
#
# TESTS (a --gtest_filter) runs loraops_gpu_tests once on the new build first, MEMCHECK and
# RACECHECK (filters) the same under compute-sanitizer memcheck and racecheck. Logs and the
# summary go to $OUT; the working tree is left as it was.
set -uo pipefail
cd "$(dirname "$0")/.."
OLD=.device/ab_old

if [ "${1:-}" = --prepare ]; then
  rev=${2:?usage: scripts/device_ab.sh --prepare REV path...}
  shift 2
  rm -rf "$OLD"
  for f in "$@"; do
    mkdir -p "$OLD/$(dirname "$f")"
    git show "$rev:$f" >"$OLD/$f" || exit 1
  done
  echo "old versions of $* from $rev in $OLD"
  exit 0
fi

OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
[ -d "$OLD" ] || { echo "no $OLD: run scripts/device_ab.sh --prepare REV path... first"; exit 2; }
mapfile -t files < <(cd "$OLD" && find . -type f | sed 's|^\./||')
NEW=$(mktemp -d)
for f in "${files[@]}"; do mkdir -p "$NEW/$(dirname "$f")" && cp "$f" "$NEW/$f"; done
restore() { for f in "${files[@]}"; do cp "$NEW/$f" "$f"; done; }
trap restore EXIT

G=()
[ -d .device/googletest ] && G=(-DLORAOPS_GTEST_SOURCE_DIR="$PWD/.device/googletest")
cmake -S . -B build/dev -G Ninja -DLORAOPS_CUDA=ON -DLORAOPS_BUILD_TESTS=ON "${G[@]}" >"$OUT/configure.log" 2>&1
status=0
for v in new old new2 old2; do
  src=$NEW
  case $v in old*) src=$OLD ;; esac
  # copies get a fresh mtime, so ninja rebuilds exactly what the swap touched
  for f in "${files[@]}"; do cp "$src/$f" "$f" && touch "$f"; done
  if ! ninja -C build/dev loraops_latency loraops_gpu_tests >"$OUT/build_$v.log" 2>&1; then
    echo "$v: build failed"; tail -30 "$OUT/build_$v.log"; status=1; continue
  fi
  if [ "$v" = new ] && [ -n "${TESTS:-}" ]; then
    timeout "${STEP_TIMEOUT:-300}" build/dev/tests/cpp/loraops_gpu_tests --gtest_filter="$TESTS" >"$OUT/tests.log" 2>&1 || status=1
    grep -E '^\[  (PASSED|FAILED)|Failure|Actual' "$OUT/tests.log" | cut -c1-300 | head -20
    if [ -n "${MEMCHECK:-}" ]; then
      timeout "${STEP_TIMEOUT:-300}" compute-sanitizer --tool memcheck --error-exitcode 1 \
        build/dev/tests/cpp/loraops_gpu_tests --gtest_filter="$MEMCHECK" >"$OUT/memcheck.log" 2>&1 || status=1
      grep -E 'ERROR SUMMARY|^\[  (PASSED|FAILED)' "$OUT/memcheck.log"
    fi
    if [ -n "${RACECHECK:-}" ]; then
      timeout "${STEP_TIMEOUT:-300}" compute-sanitizer --tool racecheck --error-exitcode 1 \
        build/dev/tests/cpp/loraops_gpu_tests --gtest_filter="$RACECHECK" >"$OUT/racecheck.log" 2>&1 || status=1
      grep -E 'RACECHECK SUMMARY|ERROR SUMMARY|^\[  (PASSED|FAILED)' "$OUT/racecheck.log"
    fi
  fi
  timeout "${STEP_TIMEOUT:-300}" build/dev/loraops_latency "${ITERS:-2000}" "${LATENCY_FILTER:-}" >"$OUT/latency_$v.log" 2>&1 || status=1
  grep -vE '^\s*$|^case' "$OUT/latency_$v.log" | sed "s/^/[$v] /"
done
exit $status
