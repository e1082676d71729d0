"""Runs a suite: every case through every implementation, one result row each.

Nothing one case does may stop the others: a missing implementation is a row saying "absent" and
why, anything that raises is a row saying "error" and what, and the run goes on. All
implementations of a case run back to back in one process on the same inputs, so their ratios
hold even on a noisy machine.
"""

import datetime
import os
import sys
import time
from dataclasses import dataclass

from . import ceilings, check, cpp_run, environment, frameworks, report, suites, timing

IMPLS = ("reference", "vendor", "custom", "auto")
TORCH = "torch"
TORCH_COMPILE = "torch.compile"  # only with --torch-compile: each case costs a compile (seconds)
# attention on CUDA: PyTorch's SDPA with each backend pinned, beside "torch" (SDPA's own choice)
SDPA_IMPLS = report.SDPA
SCHEMA = "loraops-bench/1"
DEFAULT_REPEATS = 20
# Cases faster than this (µs per call, eager) are latency-bound: also time them in graph replay.
GRAPH_BELOW_US = 30.0
# CUDA cases this slow (µs per call, the slowest implementation) are timed again with their
# implementations in turns, INTERLEAVE_ROUNDS batches each (timing.time_cuda_interleaved); those
# medians are the rows' us_median, the first ones us_sequential.
INTERLEAVE_ABOVE_US = 50.0
INTERLEAVE_ROUNDS = 9
QUICK_REPEATS = 3
# On CUDA, a case whose bytes (read + written) are under ROTATE_L2_FACTOR x the L2 size would run
# from L2 after its first call; its back-to-back timing rotates among enough copies of its inputs
# that one sweep over them is past that size (graph replay does not: see timing.time_cuda_graph).
ROTATE_L2_FACTOR = 2.0
MAX_INPUT_COPIES = 1024


@dataclass
class Options:
    suite: str = "seed"
    device: str = "auto"
    out: str = "bench-out"
    repeats: int = 0   # 0: the default (3 with quick, else 20)
    quick: bool = False
    match: str = ""    # run only cases whose "op shape dtype" contains this
    compare: str = ""  # an earlier results.json: print and write (compare.md) what moved since
    torch_compile: bool = False  # also time torch.compile'd PyTorch (a compile per case)
    cpp: str = ""      # loraops_bench's path: time the same cases from C++ too (cpp_run)


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
            "frac_of_ceiling": None, "input_copies": 1, "rotated": False, "compile_s": None,
            "us_sequential": None}


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
        _add_note(row, f"weights {row['weight_gbps']:.1f} GB/s")


def _error_text(e):
    text = f"{type(e).__name__}: {e}".replace("\n", " ")
    return text if len(text) <= 400 else text[:397] + "..."


def _add_note(row, text):
    row["note"] = f"{row['note']}; {text}" if row["note"] else text


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
        with_torch = (TORCH,) if torch is not None else ()
        with_compile = (TORCH_COMPILE,) if torch is not None and opts.torch_compile else ()
        self.impls = IMPLS + with_torch + with_compile
        self.sdpa = SDPA_IMPLS if torch is not None and device == "cuda" else ()
        self.l2_bytes, self.l2_assumed = (environment.l2_cache_bytes(torch) if device == "cuda"
                                          else (None, None))
        self.repeat_rows = []  # the noise measurement: each suite's first and heaviest case, again

    def impls_for(self, case):
        """The implementations timed for a case: the run's, plus the SDPA backends for
        attention."""
        if case.op == "attention" and self.sdpa:
            return self.impls[:len(IMPLS) + 1] + self.sdpa + self.impls[len(IMPLS) + 1:]
        return self.impls

    def time(self, fns):
        if self.device == "cuda":
            return timing.time_cuda(fns, self.repeats, self.opts.quick, self.torch)
        return timing.time_cpu(fns[0], self.repeats, self.opts.quick)

    def _inputs(self, case):
        rotate = None
        if self.device == "cuda" and self.l2_bytes:
            rotate = (ROTATE_L2_FACTOR * self.l2_bytes, MAX_INPUT_COPIES)
        return _Inputs(case, self.device, self.torch, rotate)

    def measure(self, case, impl, inputs, timed=None):
        """One row. timed: a dict that gets timed[impl] = (callables, batch) once they are timed,
        for interleave()."""
        row = _row(case, impl, self.device)
        try:
            if impl == TORCH:
                fns = [frameworks.torch_call(self.torch, case, t) for t in inputs.torch_copies]
            elif impl in SDPA_IMPLS:
                backend = impl.split(".", 1)[1]
                fns = [frameworks.torch_call(self.torch, case, t, backend)
                       for t in inputs.torch_copies]
            elif impl == TORCH_COMPILE:
                fns = self.compiled(row, case, inputs)
                if fns is None:
                    return row
            else:
                fn = frameworks.loraops_call(self.ops, case, impl, inputs.native)
                if not self.ops.has_impl(case.op, self.device, impl, case.dtype):
                    row.update(status="absent", note=_absent_reason(self.ops, fn))
                    return row
                if impl == "reference" and case.reference_too_big():
                    row.update(status="skipped", note="reference too slow at this size")
                    return row
                fns = [fn] + [frameworks.loraops_call(self.ops, case, impl, c)
                              for c in inputs.native_copies[1:]]
            t = self.time(fns)
            if timed is not None:
                timed[impl] = (fns, t.batch)
            _fill_timing(row, case, t)
            if self.device == "cuda":
                row.update(input_copies=len(fns), rotated=len(fns) > 1)
                if len(fns) > 1:
                    _add_note(row, f"inputs rotated x{len(fns)}")
            if inputs.rotation_note:
                _add_note(row, inputs.rotation_note)
            self.sanity_check(row, case, t.output, inputs)
            if self.device == "cuda" and t.us_median < GRAPH_BELOW_US and not self.opts.quick:
                self.graph_time(row, fns[0])
        except self.ops.UnsupportedError as e:  # a registered kernel that is still a stub
            row.update(status="absent", note=str(e))
        except Exception as e:
            if impl in SDPA_IMPLS and "No available kernel" in str(e):  # not for this shape
                row.update(status="absent", note=f"SDPA {impl[6:]}: {_error_text(e)}")
            else:
                row.update(status="error", note=_error_text(e))
        return row

    def compiled(self, row, case, inputs):
        """torch.compile's callables (one per input copy, one compiled graph), compiled and run
        once here so the compile is neither timed nor able to stop the run: a failure becomes
        the row's note (status error) and the method returns None."""
        t0 = time.perf_counter()
        try:
            f, names = frameworks.torch_compile(self.torch, case)
            fns = [frameworks.bind(f, names, t) for t in inputs.torch_copies]
            fns[0]()  # the compile happens here
            if self.device == "cuda":
                self.torch.cuda.synchronize()
        except Exception as e:
            row.update(status="error", note=f"torch.compile failed: {_error_text(e)}")
            return None
        row["compile_s"] = time.perf_counter() - t0
        row["note"] = f"compiled in {row['compile_s']:.1f} s"
        return fns

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
            where = f"[{i}/{total}]" if i else "[repeat]"
            self.err.write(f"{where} {case.label} {case.shape_text()} {case.dtype} "
                           f"{impl} ... ")
        elif row["status"] == "ok":
            self.err.write(f"{report.fmt_us(row['us_median'])} us\n")
        else:
            self.err.write(f"{row['status']}: {row['note']}\n")
        self.err.flush()

    def run(self, cases):
        rows, total, i = [], sum(len(self.impls_for(c)) for c in cases), 0
        interrupted = False
        first = {}  # suite -> (its first case, that case's rows)
        longest = {}  # suite -> (slowest loraops median µs, case, rows): the heaviest case
        try:
            for n, case in enumerate(cases):
                inputs = self._inputs(case)
                case_rows, timed = [], {}
                for impl in self.impls_for(case):
                    i += 1
                    self.progress(i, total, case, impl)
                    row = self.measure(case, impl, inputs, timed)
                    self.progress(i, total, case, impl, row)
                    rows.append(row)
                    case_rows.append(row)
                self.interleave(case, case_rows, timed)
                del inputs
                self.release()
                first.setdefault(case.suite, (case, case_rows))
                us = max((r["us_median"] for r in case_rows
                          if r["status"] == "ok" and r["impl"] in ("vendor", "custom")),
                         default=0.0)
                if us > longest.get(case.suite, (0.0,))[0]:
                    longest[case.suite] = (us, case, case_rows)
                if n + 1 == len(cases) or cases[n + 1].suite != case.suite:
                    # last case of its suite: the noise pairs, its first case (a small one, where
                    # host and launch jitter show) and its heaviest (where clocks and heat do)
                    self.repeat(*first[case.suite])
                    heavy = longest.get(case.suite)
                    if heavy and heavy[1] is not first[case.suite][0]:
                        self.repeat(heavy[1], heavy[2])
        except KeyboardInterrupt:  # keep what was measured
            self.err.write("\ninterrupted: writing the rows measured so far\n")
            interrupted = True
        return rows, interrupted

    def interleave(self, case, case_rows, timed):
        """A GEMM-bound CUDA case: its timed implementations again, in turns; those medians become
        the rows' us_median (and rate), the sequential ones stay as us_sequential. Rows that
        are not ok (a failed sanity check after timing, say) keep their sequential times."""
        if self.device != "cuda" or self.opts.quick or len(timed) < 2:
            return
        rows = [r for r in case_rows if r["status"] == "ok" and r["impl"] in timed]
        if max(r["us_median"] for r in rows) < INTERLEAVE_ABOVE_US:
            return
        try:
            ts = timing.time_cuda_interleaved([timed[r["impl"]][0] for r in rows],
                                              [timed[r["impl"]][1] for r in rows],
                                              INTERLEAVE_ROUNDS, self.torch)
        except Exception as e:  # the sequential times stand
            for r in rows:
                _add_note(r, f"interleaved timing failed: {_error_text(e)}")
            return
        for r, t in zip(rows, ts):
            sequential, note = r["us_median"], r["note"]
            # the decode note's bandwidth is the sequential one: _fill_timing writes it afresh
            r["note"] = "; ".join(p for p in note.split("; ") if p and not p.startswith("weights "))
            _fill_timing(r, case, t)
            r["us_sequential"] = sequential
            _add_note(r, f"interleaved x{INTERLEAVE_ROUNDS}, sequential {report.fmt_us(sequential)} us")

    def release(self):
        if self.device == "cuda":
            environment.safe(self.torch.cuda.empty_cache)  # big cases follow small ones

    def repeat(self, case, first_rows):
        """A case of the suite again, after the rest of the suite, with fresh inputs: every
        implementation that was timed the first time. The two medians differ by the run's noise."""
        inputs = self._inputs(case)
        rows, timed = [], {}
        for first in first_rows:
            if first["status"] != "ok":
                continue
            self.progress(0, 0, case, first["impl"])
            row = self.measure(case, first["impl"], inputs, timed)
            row["repeat"] = True
            self.progress(0, 0, case, first["impl"], row)
            self.repeat_rows.append(row)
            rows.append(row)
        self.interleave(case, rows, timed)
        del inputs
        self.release()


class _Inputs:
    """A case's inputs, made once and shared by every implementation (and made lazily, so a
    failure to make them is an error row of each implementation rather than a crash).

    rotate: None, or (bytes, max copies): when the case's bytes are under `bytes`, copies of the
    inputs are made (native_copies, torch_copies; the first is `native`) so that one sweep over
    their inputs exceeds `bytes`."""

    def __init__(self, case, device, torch, rotate=None):
        self.case, self.device, self.torch_module = case, device, torch
        self.rotate = rotate
        self._native = self._for_torch = None
        self._copies = self._torch_copies = None
        self.rotation_note = ""  # why fewer copies than planned, if so
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

    @property
    def native_copies(self):
        if self._copies is None:
            copies = [self.native]
            if self.rotate:
                limit, cap = self.rotate
                want = frameworks.copies_needed(self.case.bytes(),
                                                frameworks.input_bytes(self.native), limit, cap)
                try:
                    while len(copies) < want:
                        copies.append(frameworks.clone_inputs(self.native))
                except Exception as e:  # out of memory, say: rotate among what there is
                    self.rotation_note = (f"input rotation stopped at {len(copies)} of {want} "
                                          f"copies: {_error_text(e)}")
            self._copies = copies
        return self._copies

    @property
    def torch_copies(self):
        if self._torch_copies is None:
            copies = self.native_copies
            self._torch_copies = [self.for_torch] + [
                frameworks.to_torch(c, self.case, self.torch_module) for c in copies[1:]]
        return self._torch_copies


def select_cases(suite, device, match=""):
    """The cases `loraops bench` runs for --suite, a resolved device ("cpu"/"cuda") and --match
    (which keeps the cases whose "op shape dtype" contains it)."""
    halves = frameworks.half_dtypes_available() if device == "cpu" else ("bfloat16",)
    cases = suites.cases(suite, device, halves)
    if match:
        cases = [c for c in cases if match in f"{c.label} {c.shape_text()} {c.dtype}"]
    return cases


def emit_cases(opts, path, ops=None, err=None):
    """--emit-cases: writes the cases a run with these options would time to `path` (the cases
    file loraops_bench reads) instead of running them. Returns the cases.

    --device auto resolves as for a run; cpu and cuda are taken as asked, so a CPU-only machine can
    write the CUDA shapes for the GPU machine's loraops_bench."""
    from . import cases_file

    err = err or sys.stderr
    device = opts.device
    if device == "auto":
        if ops is None:
            import loraops as ops
        device = pick_device(device, ops, import_torch())
    cases = select_cases(opts.suite, device, opts.match)
    try:
        cases_file.write(path, cases, opts.suite, device, opts.match)
    except OSError as e:
        raise BenchError(f"cannot write --emit-cases {path!r}: {e}") from e
    err.write(f"loraops bench: wrote {len(cases)} cases of suite {opts.suite} on {device} "
              f"to {path}\n")
    return cases


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
    cases = select_cases(opts.suite, device, opts.match)
    try:  # before the first case: an unwritable --out must not cost a whole run's measurements
        os.makedirs(opts.out, exist_ok=True)
    except OSError as e:
        raise BenchError(f"cannot create --out {opts.out!r}: {e}") from e
    runner = Runner(opts, ops, torch, device, err)
    err.write(f"loraops bench: suite {opts.suite} on {device}, {len(cases)} cases x "
              f"{len(runner.impls)} implementations, {runner.repeats} repeats\n")
    if opts.torch_compile and torch is None:
        err.write("--torch-compile: PyTorch is not importable, so there are no torch rows\n")
    err.write("measuring the ceilings (copy bandwidth, vendor GEMM rate) ...\n")
    try:
        ceil = ceilings.measure(device, torch, opts.quick)
    except Exception as e:  # no ceiling is no reason to lose the run
        ceil = {"error": _error_text(e)}
    rows, interrupted = runner.run(cases)
    cpp = None
    if opts.cpp and not interrupted:
        runner.release()  # the C++ process needs the memory PyTorch's allocator keeps
        cpp = cpp_run.run(opts.cpp, cases, opts.suite, device, opts.match, runner.repeats,
                          opts.out, err)
        if cpp["error"]:
            err.write(f"--cpp: {cpp['error']}\n")
    for r in rows + runner.repeat_rows + (cpp["results"] if cpp else []):
        r["frac_of_ceiling"] = ceilings.fraction(r, ceil)
        if r["frac_of_ceiling"] is not None:
            what = ("copy" if r["unit"] == "GB/s" else "vendor fp32 GEMM"
                    if ceilings.gemm_ceiling_key(r) == "gemm_tflops_fp32" else "vendor GEMM")
            _add_note(r, f"{100 * r['frac_of_ceiling']:.0f}% of {what}")
    dev = environment.device_info(device, torch)
    if device == "cuda":
        dev.update(l2_cache_bytes=runner.l2_bytes, l2_cache_assumed=runner.l2_assumed)
    doc = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": dev,
        "loraops": environment.loraops_info(ops),
        "torch": environment.torch_version(torch),
        "mlx": environment.mlx_info(),
        "ceilings": ceil,
        "suite": opts.suite,
        "impls": list(runner.impls) + (list(runner.sdpa) if any(c.op == "attention"
                                                                  for c in cases) else []),
        "options": {"repeats": runner.repeats, "quick": opts.quick, "match": opts.match or None,
                    "torch_compile": bool(opts.torch_compile),
                    "rotate_below_bytes": (int(ROTATE_L2_FACTOR * runner.l2_bytes)
                                           if runner.l2_bytes else None)},
        "interrupted": interrupted,
        "results": rows,
        "repeat_rows": runner.repeat_rows,
        "noise": report.noise(rows, runner.repeat_rows),
        "cpp": cpp,
    }
    report.write(doc, opts.out)
    out.write(report.table_text(rows))
    out.write(report.noise_text(doc))
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
