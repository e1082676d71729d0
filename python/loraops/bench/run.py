"""Runs a suite: every case through every implementation, one result row each.

Nothing one case does may stop the others: a missing implementation is a row saying "absent" and
why, anything that raises is a row saying "error" and what, and the run goes on. All
implementations of a case run back to back in one process on the same inputs, so their ratios
hold even on a noisy machine.
"""

import datetime
import os
import sys
from dataclasses import dataclass

from . import ceilings, check, environment, frameworks, report, suites, timing

IMPLS = ("reference", "vendor", "custom", "auto")
TORCH = "torch"
SCHEMA = "loraops-bench/1"
DEFAULT_REPEATS = 20
# Cases faster than this (µs per call, eager) are latency-bound: also time them in graph replay.
GRAPH_BELOW_US = 30.0
QUICK_REPEATS = 3


@dataclass
class Options:
    suite: str = "seed"
    device: str = "auto"
    out: str = "bench-out"
    repeats: int = 0   # 0: the default (3 with quick, else 20)
    quick: bool = False
    match: str = ""    # run only cases whose "op shape dtype" contains this
    compare: str = ""  # an earlier results.json: print and write (compare.md) what moved since


class BenchError(Exception):
    """The run cannot start (e.g. --device cuda where there is no usable GPU)."""


def import_torch():
    try:
        import torch
    except Exception:  # absent, or a broken install: either way the bench runs without it
        return None
    return torch


def pick_device(asked, ops, torch):
    cuda_ok = torch is not None and bool(environment.safe(torch.cuda.is_available, False))
    if asked == "auto":
        return "cuda" if cuda_ok and ops.built_with_cuda() else "cpu"
    if asked == "cuda" and not cuda_ok:
        # loraops takes CUDA memory as torch tensors, so without torch there is nothing to feed it.
        raise BenchError("--device cuda needs PyTorch with a usable CUDA device; "
                         "there is none here")
    return asked


def _unit(case, device):
    if case.is_row_op:
        return "GB/s"
    return "TFLOP/s" if device == "cuda" else "GFLOP/s"


def _row(case, impl, device):
    return {"suite": case.suite, "op": case.op, "label": case.label, "shape": case.shape_text(),
            "args": case.args(), "dtype": case.dtype, "impl": impl, "status": None, "note": "",
            "us_median": None, "us_min": None, "us_max": None, "us_q1": None, "us_q3": None,
            "repeats": 0, "batch": 0, "unit": _unit(case, device), "value": None,
            "bytes": case.bytes(), "flops": case.flops(), "weight_gbps": None,
            "max_rel_err": None, "checked_against": None, "us_graph": None,
            "frac_of_ceiling": None}


def _fill_timing(row, case, t):
    row.update(status="ok", us_median=t.us_median, us_min=t.us_min, us_max=t.us_max,
               us_q1=t.us_q1, us_q3=t.us_q3, repeats=t.repeats, batch=t.batch)
    if not t.us_median > 0:  # below the clock's resolution: no rate rather than an infinite one
        return
    per_s = 1e6 / t.us_median
    if row["unit"] == "GB/s":
        row["value"] = row["bytes"] * per_s / 1e9
    else:
        row["value"] = row["flops"] * per_s / (1e12 if row["unit"] == "TFLOP/s" else 1e9)
    if case.is_decode:  # decode streams the weights: their bandwidth is the roofline that matters
        row["weight_gbps"] = case.weight_bytes() * per_s / 1e9
        row["note"] = f"weights {row['weight_gbps']:.1f} GB/s"


def _error_text(e):
    text = f"{type(e).__name__}: {e}".replace("\n", " ")
    return text if len(text) <= 400 else text[:397] + "..."


def _absent_reason(ops, call):
    """has_impl only says no; the op's own UnsupportedError says why."""
    try:
        call()
    except ops.UnsupportedError as e:
        return str(e)
    except Exception as e:
        return f"has_impl is False ({_error_text(e)})"
    return "has_impl is False"


class Runner:
    def __init__(self, opts, ops, torch, device, err):
        self.opts, self.ops, self.torch, self.device, self.err = opts, ops, torch, device, err
        self.repeats = opts.repeats or (QUICK_REPEATS if opts.quick else DEFAULT_REPEATS)
        self.impls = IMPLS + ((TORCH,) if torch is not None else ())

    def time(self, fn):
        if self.device == "cuda":
            return timing.time_cuda(fn, self.repeats, self.opts.quick, self.torch)
        return timing.time_cpu(fn, self.repeats, self.opts.quick)

    def measure(self, case, impl, inputs):
        row = _row(case, impl, self.device)
        try:
            if impl == TORCH:
                fn = frameworks.torch_call(self.torch, case, inputs.for_torch)
            else:
                fn = frameworks.loraops_call(self.ops, case, impl, inputs.native)
                if not self.ops.has_impl(case.op, self.device, impl, case.dtype):
                    row.update(status="absent", note=_absent_reason(self.ops, fn))
                    return row
                if impl == "reference" and case.reference_too_big():
                    row.update(status="skipped", note="reference too slow at this size")
                    return row
            t = self.time(fn)
            _fill_timing(row, case, t)
            self.sanity_check(row, case, t.output, inputs)
            if self.device == "cuda" and t.us_median < GRAPH_BELOW_US and not self.opts.quick:
                self.graph_time(row, fn)
        except self.ops.UnsupportedError as e:  # a registered kernel that is still a stub
            row.update(status="absent", note=str(e))
        except Exception as e:
            row.update(status="error", note=_error_text(e))
        return row

    def graph_time(self, row, fn):
        """Latency-bound cases: also the per-call time in CUDA-graph replay."""
        try:
            row["us_graph"] = timing.time_cuda_graph(fn, self.torch)
            row["note"] = ((f"{row['note']}; " if row["note"] else "")
                           + f"graph {report.fmt_us(row['us_graph'])} us")
        except Exception as e:  # an op that cannot be captured says so; the eager time stands
            row["note"] = ((f"{row['note']}; " if row["note"] else "")
                           + f"graph capture failed: {_error_text(e)}")

    def sanity_check(self, row, case, output, inputs):
        """Compares with the case's first output; the first one becomes the baseline."""
        if inputs.baseline is None:
            inputs.baseline = (row["impl"], output)
            return
        base_impl, base = inputs.baseline
        err, note = check.compare(output, base, case.dtype)
        row.update(max_rel_err=err, checked_against=base_impl)
        if note:
            row["note"] = f"{note} vs {base_impl}" + (f"; {row['note']}" if row["note"] else "")

    def progress(self, i, total, case, impl, row=None):
        if row is None:
            self.err.write(f"[{i}/{total}] {case.label} {case.shape_text()} {case.dtype} "
                           f"{impl} ... ")
        elif row["status"] == "ok":
            self.err.write(f"{report.fmt_us(row['us_median'])} us\n")
        else:
            self.err.write(f"{row['status']}: {row['note']}\n")
        self.err.flush()

    def run(self, cases):
        rows, total, i = [], len(cases) * len(self.impls), 0
        interrupted = False
        try:
            for case in cases:
                inputs = _Inputs(case, self.device, self.torch)
                for impl in self.impls:
                    i += 1
                    self.progress(i, total, case, impl)
                    row = self.measure(case, impl, inputs)
                    self.progress(i, total, case, impl, row)
                    rows.append(row)
                del inputs
                if self.device == "cuda":
                    environment.safe(self.torch.cuda.empty_cache)  # big cases follow small ones
        except KeyboardInterrupt:  # keep what was measured
            self.err.write("\ninterrupted: writing the rows measured so far\n")
            interrupted = True
        return rows, interrupted


class _Inputs:
    """A case's inputs, made once and shared by every implementation (and made lazily, so a
    failure to make them is an error row of each implementation rather than a crash)."""

    def __init__(self, case, device, torch):
        self.case, self.device, self.torch_module = case, device, torch
        self._native = self._for_torch = None
        self.baseline = None  # (impl, output) of the first implementation that ran

    @property
    def native(self):
        if self._native is None:
            self._native = frameworks.make_inputs(self.case, self.device, self.torch_module)
        return self._native

    @property
    def for_torch(self):
        if self._for_torch is None:
            self._for_torch = frameworks.to_torch(self.native, self.case, self.torch_module)
        return self._for_torch


def run_bench(opts, ops=None, out=None, err=None):
    """Runs the bench; writes results.json and report.md under opts.out, prints the table to `out`.
    Returns the results document. `ops` is the loraops module (injectable for tests)."""
    out = out or sys.stdout
    err = err or sys.stderr
    if ops is None:
        import loraops as ops
    # Read the baseline first: a file that cannot be compared must not cost a whole run.
    if opts.compare:
        from . import compare  # lazily: compare imports SCHEMA and BenchError from here
        old_doc = compare.load(opts.compare)
    torch = import_torch()
    device = pick_device(opts.device, ops, torch)
    halves = frameworks.half_dtypes_available() if device == "cpu" else ("bfloat16",)
    cases = suites.cases(opts.suite, device, halves)
    if opts.match:
        cases = [c for c in cases if opts.match in f"{c.label} {c.shape_text()} {c.dtype}"]
    try:  # before the first case: an unwritable --out must not cost a whole run's measurements
        os.makedirs(opts.out, exist_ok=True)
    except OSError as e:
        raise BenchError(f"cannot create --out {opts.out!r}: {e}") from e
    runner = Runner(opts, ops, torch, device, err)
    err.write(f"loraops bench: suite {opts.suite} on {device}, {len(cases)} cases x "
              f"{len(runner.impls)} implementations, {runner.repeats} repeats\n")
    err.write("measuring the ceilings (copy bandwidth, vendor GEMM rate) ...\n")
    try:
        ceil = ceilings.measure(device, torch, opts.quick)
    except Exception as e:  # no ceiling is no reason to lose the run
        ceil = {"error": _error_text(e)}
    rows, interrupted = runner.run(cases)
    for r in rows:
        r["frac_of_ceiling"] = ceilings.fraction(r, ceil)
        if r["frac_of_ceiling"] is not None:
            what = "copy" if r["unit"] == "GB/s" else "vendor GEMM"
            r["note"] = ((f"{r['note']}; " if r["note"] else "")
                         + f"{100 * r['frac_of_ceiling']:.0f}% of {what}")
    doc = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": environment.device_info(device, torch),
        "loraops": environment.loraops_info(ops),
        "torch": environment.torch_version(torch),
        "ceilings": ceil,
        "suite": opts.suite,
        "impls": list(runner.impls),
        "options": {"repeats": runner.repeats, "quick": opts.quick, "match": opts.match or None},
        "interrupted": interrupted,
        "results": rows,
    }
    report.write(doc, opts.out)
    out.write(report.table_text(rows))
    out.flush()
    if opts.compare:
        entries = compare.compare(old_doc, doc)
        compare.write(entries, old_doc, doc, opts.out)
        out.write(compare.text(entries, old_doc, doc))
        out.flush()
    err.write(f"wrote {os.path.join(opts.out, 'results.json')} and "
              f"{os.path.join(opts.out, 'report.md')}"
              + (f" and {os.path.join(opts.out, 'compare.md')}" if opts.compare else "") + "\n")
    return doc
