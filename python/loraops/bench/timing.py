"""Per-call time of a zero-argument callable: the median over repeated batches of back-to-back
calls.

One call of a small op is shorter than the clock's resolution and the scheduler's noise, so each
sample times a batch sized to last a fixed target and divides by its length. The median resists
the odd preempted batch; min, max and the quartiles are kept so a noisy machine shows as noise.
"""

import gc
import itertools
import statistics
import time
from dataclasses import dataclass

CPU_TARGET_S = 0.010    # within the 5-20 ms band: well above timer resolution, short vs. drift
CUDA_TARGET_S = 0.005   # events resolve ~0.5 us, so shorter batches do; more repeats fit
QUICK_TARGET_S = 0.0005
MAX_BATCH = 100_000
QUICK_MAX_BATCH = 4
# A slow implementation (the reference at mid sizes) gets fewer repeats rather than minutes.
CASE_BUDGET_S = 3.0
QUICK_CASE_BUDGET_S = 0.5
MIN_REPEATS = 3
SLOW_CALL_S = 0.05


@dataclass
class Timing:
    us_median: float
    us_min: float
    us_max: float
    us_q1: float
    us_q3: float
    repeats: int
    batch: int
    output: object = None  # what the warm-up call returned, for the sanity check


def plan(call_s, repeats, quick, target_s):
    """(batch, repeats) for calls of about call_s seconds each."""
    target = QUICK_TARGET_S if quick else target_s
    cap = QUICK_MAX_BATCH if quick else MAX_BATCH
    batch = max(1, min(cap, round(target / max(call_s, 1e-9))))
    budget = QUICK_CASE_BUDGET_S if quick else CASE_BUDGET_S
    affordable = int(budget / max(batch * call_s, 1e-9))
    return batch, max(min(repeats, MIN_REPEATS), min(repeats, affordable))


def _summary(samples_us, batch, output):
    s = sorted(samples_us)
    q1, q3 = (statistics.quantiles(s, n=4)[0::2] if len(s) >= 2 else (s[0], s[0]))
    return Timing(statistics.median(s), s[0], s[-1], q1, q3, len(s), batch, output)


class _NoGC:
    """Keeps the cyclic collector out of the timed region (it would land in random batches)."""

    def __enter__(self):
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self.was:
            gc.enable()


def time_cpu(fn, repeats, quick=False):
    # Warm-up (lazy init, first touch of fresh outputs, caches), timed: a call that slow is
    # already a fair estimate, and a second untimed call would cost as much as a sample.
    t0 = time.perf_counter_ns()
    output = fn()
    call_s = (time.perf_counter_ns() - t0) * 1e-9
    if call_s < SLOW_CALL_S:
        t0 = time.perf_counter_ns()
        fn()
        call_s = (time.perf_counter_ns() - t0) * 1e-9
    batch, repeats = plan(call_s, repeats, quick, CPU_TARGET_S)
    samples = []
    with _NoGC():
        if not quick and batch * call_s < 0.2:  # one untimed batch settles clocks and allocator
            for _ in range(batch):
                fn()
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            for _ in range(batch):
                fn()
            samples.append((time.perf_counter_ns() - t0) / 1e3 / batch)
    return _summary(samples, batch, output)


def _batch_us(start, end, run_batch, batch):
    """µs per call of one batch (run_batch() making `batch` calls) between two CUDA events."""
    start.record()
    run_batch()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / batch


def time_cuda(fn, repeats, quick=False, torch=None):
    """Times on PyTorch's current stream with events, so only device time between the events
    counts (plus any gaps when the host cannot launch fast enough: that is the latency too).

    fn: a callable, or a list of callables doing the same work on different copies of the inputs
    (see run.py's input rotation): consecutive calls then cycle through the list, continuing
    across batches, so no call finds its inputs still in L2 from the previous call's use of them.
    The warm-up and the output kept for the sanity check are the first callable's."""
    if torch is None:
        import torch
    calls = [fn] if callable(fn) else list(fn)
    first = calls[0]
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    output = first()
    torch.cuda.synchronize()
    start.record()
    first()
    end.record()
    end.synchronize()
    call_s = start.elapsed_time(end) * 1e-3
    batch, repeats = plan(call_s, repeats, quick, CUDA_TARGET_S)
    # One callable: the plain loop (no per-call cost added); several: islice over a cycle, which
    # iterates in C, so rotating costs the host no more per call than range() does.
    cycle = itertools.cycle(calls) if len(calls) > 1 else None

    def run_batch():
        if cycle is None:
            for _ in range(batch):
                first()
        else:
            for f in itertools.islice(cycle, batch):
                f()

    samples = []
    with _NoGC():
        if not quick:
            run_batch()
        for _ in range(repeats):
            samples.append(_batch_us(start, end, run_batch, batch))
    return _summary(samples, batch, output)


def time_cuda_interleaved(fn_lists, batches, rounds, torch=None):
    """Several implementations of one case timed in turns: `rounds` rounds, each timing one batch
    of every implementation in order (batches[i] back-to-back calls cycling through fn_lists[i],
    as time_cuda rotates). Sustained GEMMs hold the card at its power limit and its clocks drift
    over a run; timed one after another, that drift lands on whichever implementation ran later
    (the H200, 2026-11-29: one GEMM read 394 and 346 µs in two programs), timed in turns it weighs
    on all alike. Returns one Timing per implementation (output None)."""
    if torch is None:
        import torch
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    cycles = [itertools.cycle(fns) for fns in fn_lists]
    samples = [[] for _ in fn_lists]
    with _NoGC():
        for _ in range(rounds):
            for cyc, batch, out in zip(cycles, batches, samples):
                def run_batch():
                    for f in itertools.islice(cyc, batch):
                        f()
                out.append(_batch_us(start, end, run_batch, batch))
    return [_summary(s, b, None) for s, b in zip(samples, batches)]


def time_cuda_graph(fn, torch, calls=20, repeats=20):
    """Per-call µs of `calls` back-to-back calls captured in one CUDA graph and replayed: the
    latency with the host's launch cost taken out (what a serving loop under graphs sees).

    On purpose without input rotation: every replayed call reuses one set of inputs, so a case
    smaller than L2 is measured with hot caches, as a decode step under graphs runs (the same
    weights every step, nothing else between). The back-to-back time rotates; this one does not."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture: lazy init must not be captured
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    samples = []
    for _ in range(repeats):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1e3 / calls)
    del graph
    return statistics.median(samples)
