#!/usr/bin/env bash
# On the GPU machine: build only the C++ latency bench and profile kernels with Nsight Compute.
#   usage: scripts/device_profile.sh [latency-filter] [ncu-kernel-regex...]
# Writes $OUT/latency.txt and $OUT/ncu_<n>.txt (one per regex: the 3rd launch of a matching kernel, with the filter's
# cases only), and prints the key lines.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
FILTER=${1:-lora}
shift || true
GTEST_ARG=()
[ -d .device/googletest ] && GTEST_ARG=(-DLORAOPS_GTEST_SOURCE_DIR="$PWD/.device/googletest")
cmake -S . -B build/dev -G Ninja -DLORAOPS_CUDA=ON -DLORAOPS_BUILD_TESTS=ON "${GTEST_ARG[@]}" \
  >"$OUT/configure.txt" 2>&1 && ninja -C build/dev loraops_latency >"$OUT/build.txt" 2>&1 ||
  { tail -30 "$OUT/build.txt"; exit 1; }
B=build/dev/loraops_latency
timeout 120 $B 2000 "$FILTER" >"$OUT/latency.txt" 2>&1
echo "--- latency"; cat "$OUT/latency.txt"
i=0
for rx in "$@"; do
  i=$((i + 1))
  timeout 150 ncu -k "regex:$rx" --launch-skip 2 --launch-count 1 --section SpeedOfLight \
    --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats \
    --section LaunchStats --section SchedulerStats $B 20 "$FILTER" >"$OUT/ncu_$i.txt" 2>&1
  echo "--- ncu $rx"
  grep -E "  [a-z_]+.*\(|DRAM Throughput|Memory Throughput|Duration|Achieved Occupancy|Registers Per|Theoretical Occupancy|Waves Per SM|Block Limit Reg|Warp Cycles Per Issued|No Eligible|Issued Warp" "$OUT/ncu_$i.txt" | head -24
done
