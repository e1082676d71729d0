#!/usr/bin/env bash
# On the GPU machine (the `device` tool's H200), in one call: build with CUDA, run the GPU tests,
# run them again under compute-sanitizer (memcheck, racecheck), run the Python tests (torch and
# gpu markers included) and the benchmarks (the Python bench, with the same cases through the C++
# bench loraops_bench in the same report when it was built: --cpp). Logs go to $OUT (or ./device-out), a summary at the end.
#   usage: scripts/device_run.sh [bench suites...]   (default: seed; "none" for no bench)
#   BENCH_TIMEOUT (default 450 s) bounds each bench step, the C++ run (--cpp) included.
#   LATENCY_FILTER=text runs only the loraops_latency cases whose name contains it (a|b: either); NCU_CASE=text
#   profiles those cases' kernels with Nsight Compute (NCU_KERNEL=regex, NCU_SKIP then NCU_COUNT
#   launches, NCU_ARGS instead of the default sections; a|b: a profile of each).
#   EXAMPLE=1 also runs examples/finetune_llama_lora.py; PROFILE=1 scripts/profile_torch_example.py.
#   ONLY_CPP=1 skips the Python install, pytest and the bench; PYTEST=0 skips only pytest; ONLY_PY=1 skips the C++ tests and
#   loraops_latency (the build stays: the bench's --cpp rows); SANITIZERS=0 skips memcheck and
#   racecheck; GPU_FILTER=pattern passes --gtest_filter to every GPU-test step (RACECHECK_FILTER overrides
#   it for racecheck, the slowest; MEMCHECK_FILTER for memcheck). Each step is
#   killed after STEP_TIMEOUT seconds (default 300) so one hang cannot eat the whole call.
#   Logs are packed into $OUT/logs.tgz after every step: a call the device tool cuts off at its
#   time limit still brings back the finished steps' logs (it returns only a few files).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device-out}
LOGS=$(mktemp -d)
mkdir -p "$OUT"
SUITES=("${@:-seed}")
summary=()
pack() { tar czf "$OUT/logs.tgz.tmp" -C "$LOGS" . && mv "$OUT/logs.tgz.tmp" "$OUT/logs.tgz"; }
step() {  # step NAME CMD...: run, log to $LOGS/NAME.log, remember the status
  local name=$1; shift
  local t0=$SECONDS
  timeout "${STEP_TIMEOUT:-300}" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  summary+=("$(printf '%-22s rc=%-3s %4ss' "$name" "$rc" $((SECONDS - t0)))")
  printf '%s\n' "${summary[@]}" >"$LOGS/summary.txt"
  pack
  return $rc
}

{ nvidia-smi; nvcc --version; cmake --version; python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'; } >"$LOGS/env.log" 2>&1

# GoogleTest: the image may not have it; the CMake build takes its source from .device/googletest
# when carried (cp -r /usr/src/googletest .device/ on the dev machine).
GTEST_ARG=()
[ -d .device/googletest ] && GTEST_ARG=(-DLORAOPS_GTEST_SOURCE_DIR="$PWD/.device/googletest")
step configure cmake -S . -B build/dev -G Ninja -DLORAOPS_CUDA=ON -DLORAOPS_BUILD_TESTS=ON "${GTEST_ARG[@]}" &&
  step build ninja -C build/dev
if [ -x build/dev/tests/cpp/loraops_gpu_tests ] && [ "${ONLY_PY:-0}" != 1 ]; then
  FILTER=(--gtest_filter="${GPU_FILTER:-*}")
  step gpu_tests build/dev/tests/cpp/loraops_gpu_tests "${FILTER[@]}"
  step cpu_tests build/dev/tests/cpp/loraops_tests --gtest_brief=1
  if [ "${SANITIZERS:-1}" != 0 ]; then
  step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 build/dev/tests/cpp/loraops_gpu_tests --gtest_filter="${MEMCHECK_FILTER:-${GPU_FILTER:-*}}"
  # racecheck also reports hazards inside cuBLAS's own sm90 GEMM kernels (seen 2026-11-29 in a
  # TF32 xmma kernel) and cuDNN's attention kernels; read its log for hazards in loraops'
  # kernels, not just its exit code. The attention test runs only our kernels under it.
  LORAOPS_TEST_CUSTOM_ONLY=1 step racecheck compute-sanitizer --tool racecheck --error-exitcode 1 build/dev/tests/cpp/loraops_gpu_tests --gtest_filter="${RACECHECK_FILTER:-${GPU_FILTER:-*}}"
  fi
  step latency build/dev/loraops_latency 2000 "${LATENCY_FILTER:-}"
  # NCU_CASE=text: Nsight Compute on the loraops_latency cases whose name contains it (speed of
  # light, occupancy, launch statistics, memory workload; NCU_KERNEL=regex picks the kernels).
  if [ -n "${NCU_CASE:-}" ]; then
    # One profile per '|'-separated case (NCU_COUNT launches of each), so cases can be compared.
    IFS='|' read -ra ncu_cases <<<"$NCU_CASE"
    for i in "${!ncu_cases[@]}"; do
      [ -n "${ncu_cases[$i]}" ] || continue  # a||b: an empty case would profile every case
      # NCU_ARGS replaces the sections (e.g. "--metrics gpu__time_duration.sum --clock-control none
      # --cache-control none": each kernel's time in place, at the clocks graph replay runs at)
      read -ra ncu_args <<<"${NCU_ARGS:---section SpeedOfLight --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis --section WarpStateStats --section InstructionStats}"
      step "ncu_$i" ncu --kernel-name "regex:${NCU_KERNEL:-.}" --launch-skip "${NCU_SKIP:-0}" --launch-count "${NCU_COUNT:-4}" \
        "${ncu_args[@]}" build/dev/loraops_latency 20 "${ncu_cases[$i]}"
    done
  fi
fi
if [ "${ONLY_CPP:-0}" != 1 ]; then
step pip_install python3 -m pip install --no-build-isolation --no-deps -v -C build-dir=build/dev-py .
[ "${PYTEST:-1}" != 0 ] && step pytest env -C /tmp python3 -m pytest -q -rs "$PWD/tests/python"
if [ "${EXAMPLE:-0}" = 1 ]; then
  step example python3 examples/finetune_llama_lora.py
fi
[ "${PROFILE:-0}" = 1 ] && step profile_example python3 scripts/profile_torch_example.py
CPP_ARG=()  # the same cases from C++ too, in the same report (loraops bench --cpp)
[ -x build/dev/loraops_bench ] && CPP_ARG=(--cpp "$PWD/build/dev/loraops_bench")
for s in "${SUITES[@]}"; do
  [ "$s" = none ] && continue
  STEP_TIMEOUT=${BENCH_TIMEOUT:-450} step "bench_$s" env PYTHONUNBUFFERED=1 python3 -m loraops.cli bench --suite "$s" --device cuda --out "$LOGS/bench_$s" "${CPP_ARG[@]}" ${BENCH_ARGS:-}
  [ -f "$LOGS/bench_$s/report.md" ] && cp "$LOGS/bench_$s/report.md" "$OUT/report_$s.md"
  # the per-row graph figures, which the report keeps only in its notes
  [ -f "$LOGS/bench_$s/results.json" ] && python3 scripts/graph_rows.py "$LOGS/bench_$s/results.json" >"$LOGS/graph_$s.log" 2>&1
done
fi

pack  # the tool brings back few files: the reports and this one archive of every log

echo "=== summary ==="
printf '%s\n' "${summary[@]}"
for f in gpu_tests memcheck racecheck latency ncu pytest example; do
  tar xzf "$OUT/logs.tgz" -O "./$f.log" 2>/dev/null | tail -n 8 | sed "1i --- $f (tail)"
done
tar xzf "$OUT/logs.tgz" -O ./profile_example.log 2>/dev/null | grep -E "^===|fallbacks" | sed "1i --- profile_example"
for s in "${SUITES[@]}"; do
  tar xzf "$OUT/logs.tgz" -O "./bench_$s.log" 2>/dev/null | grep -E "custom|vendor" | grep -v absent | sed "1i --- bench $s"
  tar xzf "$OUT/logs.tgz" -O "./graph_$s.log" 2>/dev/null
done
# the call's status: 0 when every step passed (not the last grep's)
! printf '%s\n' "${summary[@]}" | grep -qv 'rc=0 '
