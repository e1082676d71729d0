"""The ceilings every figure is a fraction of, measured in the same run as the figures (a noisy
or throttled machine then moves both): device-to-device copy bandwidth (bytes read + written) and,
on CUDA, the vendor GEMM rate (bf16 8192^3 through PyTorch's cuBLAS; float32 rows against true
fp32 4096^3, as a float32 GEMM on bf16 tensor cores' rate would read a few %) and the launch floor: what an
empty kernel costs per call back-to-back from Python and in CUDA-graph replay, under which no
single-kernel op can go from there."""

import statistics
import time

import numpy as np

COPY_BYTES = 1 << 30      # 1 GiB each way on the GPU: far past the 60 MB L2
CPU_COPY_BYTES = 1 << 28  # 256 MiB on the CPU: past any last-level cache


def measure(device, torch=None, quick=False):
    if device == "cuda":
        return _cuda(torch, quick)
    return _cpu(quick)


def _cpu(quick):
    n = (CPU_COPY_BYTES >> (4 if quick else 0)) // 4
    src = np.random.default_rng(0).random(n, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    samples = []
    for _ in range(3 if quick else 7):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        samples.append(time.perf_counter() - t0)
    return {"copy_gbps": 2 * src.nbytes / statistics.median(samples) / 1e9, "gemm_tflops": None}


def _cuda(torch, quick):
    nbytes = COPY_BYTES >> (4 if quick else 0)
    src = torch.rand(nbytes // 2, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    copy_s = _events(torch, lambda: dst.copy_(src), 5 if quick else 20)
    del src, dst
    n = 2048 if quick else 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    gemm_s = _events(torch, lambda: torch.matmul(a, b), 3 if quick else 10)
    del a, b
    n32 = 1024 if quick else 4096
    try:  # a failure here must not cost the copy and bf16 ceilings
        gemm32_s = _fp32_gemm(torch, n32, quick)
    except Exception:
        gemm32_s = None
    torch.cuda.empty_cache()
    try:
        eager_us, graph_us = _launch_floor(torch, quick)
    except Exception:  # a failed floor must not cost the copy and GEMM ceilings
        eager_us = graph_us = None
    return {"copy_gbps": 2 * nbytes / copy_s / 1e9, "gemm_tflops": 2 * n ** 3 / gemm_s / 1e12,
            "gemm_shape": f"bf16 {n}^3 torch.matmul",
            "gemm_tflops_fp32": 2 * n32 ** 3 / gemm32_s / 1e12 if gemm32_s else None,
            "gemm_shape_fp32": f"fp32 {n32}^3 torch.matmul (no TF32)" if gemm32_s else None,
            "launch_us": eager_us,
            "launch_graph_us": graph_us, "launch_kernel": "torch.cuda._sleep(0)"}


def _fp32_gemm(torch, n, quick):
    """Seconds per torch.matmul of two n x n float32 matrices in true fp32 (no TF32, as loraops'
    float32 matmul), the caller's precision setting restored after."""
    a = torch.randn(n, n, device="cuda", dtype=torch.float32)
    b = torch.randn(n, n, device="cuda", dtype=torch.float32)
    matmul = torch.backends.cuda.matmul
    # PyTorch 2.9+: fp32_precision ("ieee" / "tf32"); before it, allow_tf32.
    key, ieee = ("fp32_precision", "ieee") if hasattr(matmul, "fp32_precision") else ("allow_tf32", False)
    saved = getattr(matmul, key)
    setattr(matmul, key, ieee)
    try:
        return _events(torch, lambda: torch.matmul(a, b), 3 if quick else 10)
    finally:
        setattr(matmul, key, saved)


def _launch_floor(torch, quick, calls=100):
    """µs per call of an empty kernel (``torch.cuda._sleep(0)``: one launch, no work), back to
    back from Python and replayed from a CUDA graph of `calls` launches; (None, None) when this
    PyTorch has no such kernel."""
    sleep = getattr(torch.cuda, "_sleep", None)
    if sleep is None:
        return None, None
    reps = 5 if quick else 20

    def burst():
        for _ in range(calls):
            sleep(0)

    eager = _events(torch, burst, reps) / calls * 1e6
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # capture off the default stream, as PyTorch requires
        burst()
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            burst()
    replayed = _events(torch, graph.replay, reps) / calls * 1e6
    del graph
    return eager, replayed


def _events(torch, fn, reps):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1e-3)
    return statistics.median(times)


def gemm_ceiling_key(row):
    """Which GEMM rate a FLOP/s row is a fraction of: fp32's for float32 rows, else bf16's."""
    return "gemm_tflops_fp32" if row.get("dtype") == "float32" else "gemm_tflops"


def fraction(row, ceil):
    """The row's rate as a fraction of its ceiling (copy for GB/s, vendor GEMM of the row's dtype
    for FLOP/s)."""
    v = row.get("value")
    if v is None or not ceil:
        return None
    if row["unit"] == "GB/s":
        return v / ceil["copy_gbps"] if ceil.get("copy_gbps") else None
    if row["unit"] == "TFLOP/s" and ceil.get(gemm_ceiling_key(row)):
        return v / ceil[gemm_ceiling_key(row)]
    return None
