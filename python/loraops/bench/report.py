"""The bench's outputs: the plain-text table (stdout), results.json and report.md.

report.md answers the question loraops exists for: per op and shape, which implementation is
fastest, and whether our kernel (custom) beats the vendor library, by how much.
"""

import json
import math
import os
from collections import OrderedDict

IMPL_ORDER = ("reference", "vendor", "custom", "auto", "torch")
# "auto" only dispatches to vendor or custom, so it never counts as a contender of its own.
CONTENDERS = ("reference", "vendor", "custom", "torch")
_TEXT_COLUMNS = ("op", "shape", "dtype", "fastest")


def fmt_us(us):
    if us is None:
        return "-"
    if us < 10:
        return f"{us:.2f}"
    if us < 1000:
        return f"{us:.1f}"
    return f"{us:,.0f}"


def fmt_value(row):
    v = row.get("value")
    if v is None:
        return "-"
    return f"{v:.3g} {row['unit']}" if v < 100 else f"{v:,.0f} {row['unit']}"


def table_text(rows):
    """Fixed-width table; a blank line between cases, so a case's implementations read
    together."""
    head = ("op", "shape", "dtype", "impl", "us", "rate", "note")
    lines, prev = [], None
    body = []
    for r in rows:
        key = (r["suite"], r["label"], r["shape"], r["dtype"])
        if prev is not None and key != prev:
            body.append(None)
        prev = key
        note = r["note"] if r["status"] == "ok" else f"{r['status']}: {r['note']}"
        body.append((r["label"], r["shape"], r["dtype"], r["impl"], fmt_us(r["us_median"]),
                     fmt_value(r), note))
    cells = [head] + [b for b in body if b]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head) - 1)]

    def line(c):
        return "  ".join(
            [c[i].rjust(widths[i]) if i == 4 else c[i].ljust(widths[i]) for i in range(6)]
            + [c[6]]).rstrip()

    lines.append(line(head))
    lines.append("  ".join("-" * w for w in widths) + "  ----")
    lines += ["" if b is None else line(b) for b in body]
    return "\n".join(lines) + "\n"


def write(doc, out_dir):
    with open(os.path.join(out_dir, "results.json"), "w") as fh:
        json.dump(doc, fh, indent=1, allow_nan=False, default=str)
        fh.write("\n")
    from . import plot  # here, not at the top: plot imports this module's IMPL_ORDER
    plots, why_not = plot.write(doc, out_dir)
    with open(os.path.join(out_dir, "report.md"), "w") as fh:
        fh.write(markdown(doc, plots, why_not, _schema_link(out_dir)))


SCHEMA_DOC = os.path.join("docs", "bench-schema.md")


def _schema_link(out_dir):
    """The schema document relative to out_dir when out_dir lies in a loraops checkout (the usual
    ./bench-out), so the link works where the report is read; else its path in the repository."""
    d = os.path.abspath(out_dir)
    while True:
        if os.path.isfile(os.path.join(d, SCHEMA_DOC)):
            return os.path.relpath(os.path.join(d, SCHEMA_DOC), os.path.abspath(out_dir))
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


# ---- report.md ------------------------------------------------------------------------------


def _cases(rows):
    """Rows grouped per case (suite, op label, shape, dtype), in run order: {impl: row}."""
    out = OrderedDict()
    for r in rows:
        out.setdefault((r["suite"], r["label"], r["shape"], r["dtype"]), {})[r["impl"]] = r
    return out


def _us(by_impl, impl):
    r = by_impl.get(impl)
    return r["us_median"] if r and r["status"] == "ok" else None


def _fastest(by_impl):
    ok = [(by_impl[i]["us_median"], i) for i in CONTENDERS if _us(by_impl, i) is not None]
    return min(ok) if ok else (None, None)


def _ratio(a, b):
    return a / b if a is not None and b else None


def _gemm_ratio(key, by_impl, cases):
    """LoRA forward time over its base GEMM's (x@W.T of the same M, K, N), best loraops vs best
    loraops: the price of the adapter on top of the frozen layer."""
    suite, label, _shape, dtype = key
    if label != "lora_forward":
        return None
    a = next(iter(by_impl.values()))["args"]
    gemm_shape = f"[{a['m']},{a['k']}]@[{a['n']},{a['k']}].T"
    gemm = cases.get((suite, "matmul", gemm_shape, dtype))
    if gemm is None:
        return None
    return _ratio(_best_loraops(by_impl), _best_loraops(gemm))


def _cell(by_impl, impl):
    r = by_impl.get(impl)
    if r is None:
        return ""
    return fmt_us(r["us_median"]) if r["status"] == "ok" else r["status"]


def _environment(doc, schema_link=None):
    d, lo = doc["device"], doc["loraops"]
    threads = d.get("thread_env") or {}
    yn = {True: "yes", False: "no", None: "?"}
    lines = [f"# loraops bench: suite `{doc['suite']}`", "",
             f"- created: {doc['created']}",
             f"- device: **{d['type']}**, {d.get('name')}"]
    if d["type"] == "cuda":
        lines[-1] += (f" (compute capability {d.get('capability')}, {d.get('memory_gib')} GiB, "
                      f"{d.get('sm_count')} SMs, CUDA runtime {d.get('cuda_runtime')})")
    lines += [f"- host: {d.get('cpu')}, {d.get('usable_cores')} usable cores "
              f"(of {d.get('cpu_count')}); {d.get('platform')}"
              + "; thread settings: " + (", ".join(f"{k}={v}" for k, v in threads.items())
                                         or "defaults"),
              f"- loraops {lo.get('version')} (CUDA backend: {yn[lo.get('built_with_cuda')]}, "
              f"BLAS: {yn[lo.get('built_with_blas')]}); "
              f"PyTorch: {doc.get('torch') or 'not importable'}"
              + (f" ({d.get('torch_threads')} CPU threads)" if doc.get("torch") else "")
              + f"; Python {d.get('python')}, numpy {d.get('numpy')}",
              f"- timing: median over {doc['options']['repeats']} batches of back-to-back calls"
              + (" (--quick: tiny batches, rough numbers)" if doc["options"]["quick"] else "")
              + "; cells are µs per call",
              "- roofline units: GB/s = (bytes read + written) / time for row ops and activations; "
              "FLOP/s = 2·M·N·K (+ 2·M·r·(K+N) for LoRA) / time; decode (M ≤ 16) LoRA and GEMM "
              "also GB/s of the weights they stream",
              "- vendor/custom = vendor µs / custom µs: above 1, our kernel is faster"]
    c = doc.get("ceilings") or {}
    if c.get("copy_gbps"):
        lines.append(f"- ceilings measured in this run: copy {c['copy_gbps']:,.0f} GB/s (read + "
                     "written)" + (f", vendor GEMM {c['gemm_tflops']:,.0f} TFLOP/s "
                                   f"({c.get('gemm_shape')})" if c.get("gemm_tflops") else "")
                     + "; notes give each rate as a % of its ceiling; on CUDA, cases under "
                     "30 µs are also timed in CUDA-graph replay (\"graph\" in the notes)")
    elif c.get("error"):
        lines.append(f"- ceilings: not measured ({c['error']})")
    where = (f"[{SCHEMA_DOC}]({schema_link})" if schema_link
             else f"{SCHEMA_DOC} in loraops' source")
    lines.append(f"- results.json: schema `{doc['schema']}`, described in {where}")
    if doc.get("interrupted"):
        lines.append("- **interrupted**: the run was stopped; rows after the stop are missing")
    return lines + [""]


def _suite_table(suite, cases):
    keys = [k for k in cases if k[0] == suite]
    impls = [i for i in IMPL_ORDER if any(i in cases[k] for k in keys)]
    gemm = {k: _gemm_ratio(k, cases[k], cases) for k in keys}
    show_gemm = any(v is not None for v in gemm.values())
    head = ["op", "shape", "dtype"] + impls + ["fastest", "rate of fastest", "vendor/custom"]
    head += ["LoRA/GEMM"] if show_gemm else []
    lines = [f"## {suite}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join("---" if h in _TEXT_COLUMNS else "---:" for h in head) + "|"]
    for k in keys:
        by = cases[k]
        us, best = _fastest(by)
        vc = _ratio(_us(by, "vendor"), _us(by, "custom"))
        cells = [k[1], f"`{k[2]}`", k[3]] + [_cell(by, i) for i in impls]
        cells += [best or "-", fmt_value(by[best]) if best else "-", f"{vc:.2f}" if vc else ""]
        if show_gemm:
            cells.append(f"{gemm[k]:.2f}" if gemm[k] else "")
        lines.append("| " + " | ".join(cells) + " |")
    if show_gemm:
        lines += ["", "LoRA/GEMM: the faster loraops LoRA forward over the faster loraops base "
                  "GEMM (x@W.T) of the same M, K, N; 1.00 would be a free adapter."]
    return lines + [""]


def _geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def _best_loraops(by):
    return min((u for u in (_us(by, "vendor"), _us(by, "custom")) if u), default=None)


def _decision(cases):
    """Per op and dtype: how often and by how much our kernel beats the vendor's, whether auto
    picked the faster of the two, and where loraops stands against PyTorch eager."""
    groups = OrderedDict()
    for (suite, label, shape, dtype), by in cases.items():
        groups.setdefault((label, dtype), []).append((shape, by))
    lines = ["## Decision: vendor or custom", "",
             "| op | dtype | cases with both | custom faster in | vendor/custom (geomean, range) "
             "| auto / best of the two (worst) | torch / best loraops (geomean) "
             "| where custom wins |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for (label, dtype), items in groups.items():
        vs_torch = [_us(b, "torch") / _best_loraops(b) for _s, b in items
                    if _us(b, "torch") and _best_loraops(b)]
        torch_cell = f"{_geomean(vs_torch):.2f}" if vs_torch else ""
        both = [(s, _us(b, "vendor"), _us(b, "custom"), _us(b, "auto")) for s, b in items
                if _us(b, "vendor") and _us(b, "custom")]
        if not both:
            only = sorted({i for _s, b in items for i in ("vendor", "custom") if _us(b, i)})
            ran = f"only {', '.join(only)} ran" if only else "neither ran"
            lines.append(f"| {label} | {dtype} | 0 | | {ran} "
                         f"| | {torch_cell} | |")
            continue
        ratios = [v / c for _s, v, c, _a in both]
        wins = [s for s, v, c, _a in both if c < v]
        autos = [a / min(v, c) for _s, v, c, a in both if a]
        where = ", ".join(f"`{s}`" for s in wins[:4]) + (" ..." if len(wins) > 4 else "")
        lines.append(
            f"| {label} | {dtype} | {len(both)} | {len(wins)} | {_geomean(ratios):.2f} "
            f"({min(ratios):.2f}-{max(ratios):.2f}) | "
            + (f"{_geomean(autos):.2f} ({max(autos):.2f})" if autos else "")
            + f" | {torch_cell} | {where} |")
    return lines + ["", "auto / best: 1.00 means auto ran the faster implementation every time. "
                    "torch / best loraops: above 1, loraops' faster path beats PyTorch eager.", ""]


def _notes(rows):
    """Why rows are missing, once per distinct reason."""
    seen = OrderedDict()
    for r in rows:
        if r["status"] != "ok":
            key = (r["status"], r["impl"], r["note"])
            seen.setdefault(key, []).append(f"{r['label']} {r['shape']} {r['dtype']}")
    if not seen:
        return []
    lines = ["## Absent, skipped and failed", ""]
    for (status, impl, note), where in seen.items():
        lines.append(f"- **{status}** {impl} ({len(where)} case{'s' * (len(where) > 1)}): {note}")
    return lines + [""]


def markdown(doc, plots=None, why_no_plots=None, schema_link=None):
    """plots: {suite: png file name beside report.md}; why_no_plots: a line saying why none."""
    rows = doc["results"]
    cases = _cases(rows)
    suites = list(OrderedDict.fromkeys(r["suite"] for r in rows))
    lines = _environment(doc, schema_link)
    if why_no_plots:
        lines[-1:-1] = [f"- plots: {why_no_plots}"]  # inside the header list, before its blank
    for s in suites:
        lines += _suite_table(s, cases)
        if plots and s in plots:
            lines += [f"![suite {s}: each case by implementation]({plots[s]})", ""]
    lines += _decision(cases) + _notes(rows)
    return "\n".join(lines)
