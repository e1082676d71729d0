"""The bench's outputs: the plain-text table (stdout), results.json and report.md.

report.md answers the question loraops exists for: per op and shape, which implementation is
fastest, and whether our kernel (custom) beats the vendor library, by how much.
"""

import json
import math
import os
from collections import OrderedDict

from .frameworks import SDPA_BACKENDS

SDPA = tuple("torch." + b for b in SDPA_BACKENDS)  # attention on CUDA: SDPA, backend pinned
IMPL_ORDER = ("reference", "vendor", "custom", "auto", "torch") + SDPA + ("torch.compile",)
# "auto" only dispatches to vendor or custom, so it never counts as a contender of its own.
CONTENDERS = ("reference", "vendor", "custom", "torch") + SDPA + ("torch.compile",)
FRAMEWORKS = (("torch", "PyTorch eager"), ("torch.flash", "PyTorch SDPA flash"),
              ("torch.efficient", "PyTorch SDPA memory-efficient"),
              ("torch.cudnn", "PyTorch SDPA cuDNN"), ("torch.compile", "torch.compile"))
# A winner by less than the suite's measured noise floor is a tie; the floor is one pair of
# medians, a small sample, so a tie is never narrower than TIE_MIN. Without a noise measurement
# (an interrupted run), TIE_DEFAULT stands in (--compare's MIN_CHANGE).
TIE_MIN = 0.01
TIE_DEFAULT = 0.05
NOISY = 0.10  # a floor above this gets a warning in report.md
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
    gemm = _gemm_of(key, by_impl, cases)
    return _ratio(_best_loraops(by_impl), _best_loraops(gemm)) if gemm else None


def _gemm_of(key, by_impl, cases):
    """The base GEMM case's {impl: row} of a lora_forward case, or None."""
    suite, label, _shape, dtype = key
    if label != "lora_forward":
        return None
    a = next(iter(by_impl.values()))["args"]
    return cases.get((suite, "matmul", f"[{a['m']},{a['k']}]@[{a['n']},{a['k']}].T", dtype))


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
                     + (f", fp32 GEMM {c['gemm_tflops_fp32']:,.1f} TFLOP/s "
                        f"({c.get('gemm_shape_fp32')}: float32 rows)" if c.get("gemm_tflops_fp32") else "")
                     + "; notes give each rate as a % of its ceiling; on CUDA, cases under "
                     "30 µs are also timed in CUDA-graph replay (\"graph\" in the notes)")
    elif c.get("error"):
        lines.append(f"- ceilings: not measured ({c['error']})")
    if c.get("launch_us"):
        lines.append(f"- launch floor measured in this run: an empty kernel "
                     f"(`{c.get('launch_kernel')}`) costs {c['launch_us']:.2f} µs per call back "
                     f"to back from Python"
                     + (f" and {c['launch_graph_us']:.2f} µs in CUDA-graph replay"
                        if c.get("launch_graph_us") else "")
                     + ": no one-kernel op goes below it")
    where = (f"[{SCHEMA_DOC}]({schema_link})" if schema_link
             else f"{SCHEMA_DOC} in loraops' source")
    opts = doc.get("options") or {}
    if d["type"] == "cuda" and opts.get("rotate_below_bytes"):
        l2 = d.get("l2_cache_bytes")
        lines.append(
            f"- input rotation: back-to-back timing of cases under "
            f"{opts['rotate_below_bytes'] / 2**20:.0f} MiB (2x the "
            + (f"{l2 / 2**20:.0f} MiB " if l2 else "")
            + ("L2, assumed" if d.get("l2_cache_assumed") else "L2")
            + ") cycles through copies of their inputs (\"inputs rotated xN\" in the notes), so "
            "no call finds its inputs in L2; graph replay reuses one copy on purpose: it is the "
            "hot-cache latency a decode step under CUDA graphs sees")
    lines.append(f"- results.json: schema `{doc['schema']}`, described in {where}")
    if doc.get("interrupted"):
        lines.append("- **interrupted**: the run was stopped; rows after the stop are missing")
    return lines + [""]


def _suite_table(suite, cases):
    keys = [k for k in cases if k[0] == suite]
    impls = [i for i in IMPL_ORDER if any(i in cases[k] for k in keys)]
    gemm = {k: _gemm_ratio(k, cases[k], cases) for k in keys}
    show_gemm = any(v is not None for v in gemm.values())
    head = ["op", "shape", "dtype"] + impls + ["fastest", "rate of fastest", "spread",
                                               "vendor/custom"]
    head += ["LoRA/GEMM"] if show_gemm else []
    lines = [f"## {suite}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join("---" if h in _TEXT_COLUMNS else "---:" for h in head) + "|"]
    for k in keys:
        by = cases[k]
        us, best = _fastest(by)
        vc = _ratio(_us(by, "vendor"), _us(by, "custom"))
        cells = [k[1], f"`{k[2]}`", k[3]] + [_cell(by, i) for i in impls]
        cells += [best or "-", fmt_value(by[best]) if best else "-",
                  _spread(by[best]) if best else "", f"{vc:.2f}" if vc else ""]
        if show_gemm:
            cells.append(f"{gemm[k]:.2f}" if gemm[k] else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Cells: median µs per call over the timed batches; spread: the fastest's "
              "interquartile range of those batches over its median (min-max in results.json)."]
    if show_gemm:
        lines += ["", "LoRA/GEMM: the faster loraops LoRA forward over the faster loraops base "
                  "GEMM (x@W.T) of the same M, K, N; 1.00 would be a free adapter."]
    return lines + [""]


def _spread(row):
    """The row's interquartile range over its median, as text ("" when not recorded)."""
    q1, q3, med = row.get("us_q1"), row.get("us_q3"), row.get("us_median")
    if q1 is None or q3 is None or not med:
        return ""
    return f"{100 * (q3 - q1) / med:.1f}%"


def _geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def _best_loraops(by):
    return min((u for u in (_us(by, "vendor"), _us(by, "custom")) if u), default=None)


# ---- the noise pair -------------------------------------------------------------------------


def noise(rows, repeat_rows):
    """Per suite and noise case (its first and its heaviest), the case's two runs: [{suite, label, shape, dtype, pairs: [{impl,
    us_first, us_repeat, diff}], floor}], diff = (repeat - first) / first and floor the largest
    slower/faster - 1 of the suite's pairs (null when no pair was timed both times)."""
    first = {(r["suite"], r["label"], r["shape"], r["dtype"], r["impl"]): r for r in rows}
    out = OrderedDict()
    for rr in repeat_rows:
        key = (rr["suite"], rr["label"], rr["shape"], rr["dtype"])
        entry = out.setdefault(key, {"suite": key[0], "label": key[1], "shape": key[2],
                                     "dtype": key[3], "pairs": [], "floor": None})
        r1 = first.get(key + (rr["impl"],))
        a = r1["us_median"] if r1 and r1["status"] == "ok" else None
        b = rr["us_median"] if rr["status"] == "ok" else None
        diff = (b - a) / a if a and b else None
        entry["pairs"].append({"impl": rr["impl"], "us_first": a, "us_repeat": b, "diff": diff})
        # symmetric: slower/faster - 1, as ties are judged; loraops' vendor, custom and auto
        # only: the floor judges vendor against custom, and a framework's host-bound jitter (seen:
        # torch.compile +41% on a 30 µs decode case) or the fp64 reference's would call every
        # such decision a tie
        if diff is not None and rr["impl"] in ("vendor", "custom", "auto"):
            entry["floor"] = max(max(a, b) / min(a, b) - 1, entry["floor"] or 0.0)
    return list(out.values())


def tie_thresholds(doc):
    """{suite: the relative difference below which two times count as a tie}."""
    out = {}
    for n in doc.get("noise") or []:
        if n.get("floor") is not None:  # a suite's largest floor over its noise cases
            out[n["suite"]] = max(n["floor"], TIE_MIN, out.get(n["suite"], 0.0))
    return out


def _tie(thresholds, suite):
    return thresholds.get(suite, TIE_DEFAULT)


def _pct(x):
    return f"{100 * x:+.1f}%"


def noise_text(doc):
    """A line per suite for the terminal."""
    lines = []
    for n in doc.get("noise") or []:
        pairs = ", ".join(f"{p['impl']} {fmt_us(p['us_first'])} -> {fmt_us(p['us_repeat'])} us"
                          + (f" ({_pct(p['diff'])})" if p["diff"] is not None else "")
                          for p in n["pairs"])
        floor = f"{100 * n['floor']:.1f}%" if n["floor"] is not None else "-"
        lines.append(f"noise ({n['suite']}): {n['label']} {n['shape']} {n['dtype']} run twice: "
                     f"{pairs or 'nothing timed'}; floor {floor}")
    return "\n".join(lines) + ("\n" if lines else "")


def _noise_section(doc):
    lines = ["### Noise", ""]
    entries = doc.get("noise") or []
    if not entries:
        return lines + [f"No case was run twice (an interrupted run, or a results.json from "
                        f"before the noise pair): winners by less than {TIE_DEFAULT:.0%} are "
                        f"called ties.", ""]
    lines += ["Each suite's first case and its heaviest (the slowest loraops median) ran a "
              "second time, after the rest of the suite, on fresh inputs (labelled `repeat` in "
              "results.json's `repeat_rows`). The largest gap between two medians (slower / "
              "faster - 1) of loraops' vendor, custom and auto is the suite's noise floor (the frameworks' pairs are shown, not "
              "counted: their host-bound jitter would make every vendor-or-custom call a tie); "
              f"a winner by less than it (and never less than {TIE_MIN:.0%}) is called a tie.",
              "",
              "| suite | case | impl | first µs | repeat µs | difference |",
              "|---|---|---|---:|---:|---:|"]
    for n in entries:
        for p in n["pairs"]:
            lines.append(f"| {n['suite']} | {n['label']} `{n['shape']}` {n['dtype']} | "
                         f"{p['impl']} | {fmt_us(p['us_first'])} | {fmt_us(p['us_repeat'])} | "
                         + (_pct(p["diff"]) if p["diff"] is not None else "") + " |")
    floors = ", ".join(f"{n['suite']} ({n['label']} `{n['shape']}`) {100 * n['floor']:.1f}%"
                       for n in entries
                       if n["floor"] is not None)
    noisy = any((n["floor"] or 0) > NOISY for n in entries)
    return lines + ["", f"Noise floor: {floors or 'not measured'}."
                    + (f" Above {NOISY:.0%}: a noisy machine (or a --quick run), so many "
                       "differences below are called ties; rerun on a quiet machine before "
                       "trusting them." if noisy else ""), ""]


# ---- the decision ---------------------------------------------------------------------------


def _outcome(a_us, b_us, tie):
    """"a" or "b" (the faster, beyond the tie margin) or "tie"."""
    if max(a_us, b_us) / min(a_us, b_us) - 1 <= tie:
        return "tie"
    return "a" if a_us < b_us else "b"


def _tally(pairs, ties):
    """Wins and ties of `a` against `b` over [(suite, a_us, b_us, shape, dtype)]: (a_wins,
    b_wins, n_tie), each win as (factor, shape, dtype)."""
    a_wins, b_wins, n_tie = [], [], 0
    for suite, a, b, shape, dtype in pairs:
        o = _outcome(a, b, _tie(ties, suite))
        if o == "a":
            a_wins.append((b / a, shape, dtype))
        elif o == "b":
            b_wins.append((a / b, shape, dtype))
        else:
            n_tie += 1
    return a_wins, b_wins, n_tie


def _decision_table(cases, ties, with_compile):
    groups = OrderedDict()
    for (suite, label, shape, dtype), by in cases.items():
        groups.setdefault((label, dtype), []).append((suite, shape, by))
    head = ("| op | dtype | cases with both | custom / vendor / tie | vendor/custom (geomean, "
            "range) | auto / best of the two (worst) | torch / best loraops (geomean) "
            + ("| torch.compile / best loraops (geomean) " if with_compile else "")
            + "| where custom wins |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|" + ("---:|" if with_compile else "")
             + "---|"]
    for (label, dtype), items in groups.items():
        fw_cells = []
        for fw in ("torch", "torch.compile")[:2 if with_compile else 1]:
            vs = [_us(b, fw) / _best_loraops(b) for _su, _s, b in items
                  if _us(b, fw) and _best_loraops(b)]
            fw_cells.append(f"{_geomean(vs):.2f}" if vs else "")
        both = [(su, s, _us(b, "vendor"), _us(b, "custom"), _us(b, "auto"))
                for su, s, b in items if _us(b, "vendor") and _us(b, "custom")]
        if not both:
            only = sorted({i for _su, _s, b in items for i in ("vendor", "custom") if _us(b, i)})
            ran = f"only {', '.join(only)} ran" if only else "neither ran"
            lines.append(f"| {label} | {dtype} | 0 | | {ran} | | " + " | ".join(fw_cells)
                         + " | |")
            continue
        ratios = [v / c for _su, _s, v, c, _a in both]
        outcome = [(s, _outcome(c, v, _tie(ties, su))) for su, s, v, c, _a in both]
        wins = [s for s, o in outcome if o == "a"]
        count = [sum(o == k for _s, o in outcome) for k in ("a", "b", "tie")]
        autos = [a / min(v, c) for _su, _s, v, c, a in both if a]
        where = ", ".join(f"`{s}`" for s in wins[:4]) + (" ..." if len(wins) > 4 else "")
        lines.append(
            f"| {label} | {dtype} | {len(both)} | {count[0]} / {count[1]} / {count[2]} | "
            f"{_geomean(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | "
            + (f"{_geomean(autos):.2f} ({max(autos):.2f})" if autos else "")
            + " | " + " | ".join(fw_cells) + f" | {where} |")
    return lines + ["", "custom / vendor / tie: cases our kernel wins, the vendor's wins, and "
                    "ties within the suite's noise floor. auto / best: 1.00 means auto ran the "
                    "faster implementation every time. torch / best loraops: above 1, loraops' "
                    "faster path beats PyTorch (likewise torch.compile).", ""]


def _lora_gemm_section(cases):
    """LoRA forward over its base GEMM, one line per (M, K, N, dtype), one column per rank."""
    groups, ranks = OrderedDict(), []
    for key, by in cases.items():
        gemm = _gemm_of(key, by, cases)
        if gemm is None:
            continue
        a = next(iter(by.values()))["args"]
        ours = _ratio(_best_loraops(by), _best_loraops(gemm))
        theirs = _ratio(_us(by, "torch"), _us(gemm, "torch"))
        groups.setdefault((key[0], a["m"], a["k"], a["n"], key[3]), {})[a["r"]] = (ours, theirs)
        if a["r"] not in ranks:
            ranks.append(a["r"])
    if not groups:
        return []
    ranks.sort()
    lines = ["### LoRA / base GEMM", "",
             "The faster loraops LoRA forward over the faster loraops base GEMM (x@W.T) of the "
             "same M, K, N: 1.00 is a free adapter. In brackets, PyTorch eager's own ratio "
             "(its PEFT-style LoRA over its matmul).", "",
             "| suite | M | K | N | dtype | " + " | ".join(f"r={r}" for r in ranks) + " |",
             "|---|---:|---:|---:|---|" + "---:|" * len(ranks)]
    all_ours = []
    for (suite, m, k, n, dtype), by_r in groups.items():
        cells = []
        for r in ranks:
            ours, theirs = by_r.get(r, (None, None))
            cells.append((f"{ours:.2f}" if ours else "-")
                         + (f" ({theirs:.2f})" if theirs else ""))
            if ours:
                all_ours.append((ours, m, k, r))
        lines.append(f"| {suite} | {m} | {k} | {n} | {dtype} | " + " | ".join(cells) + " |")
    if all_ours:
        worst = max(all_ours)
        lines += ["", f"LoRA / base GEMM: geomean {_geomean([o[0] for o in all_ours]):.2f} over "
                  f"{len(all_ours)} cases; the adapter costs most at M={worst[1]}, K={worst[2]}, "
                  f"r={worst[3]} ({worst[0]:.2f})."]
    return lines + [""]


_FAMILIES = OrderedDict([("matmul", "GEMM (matmul)"), ("lora_forward", "LoRA forward"),
                         ("lora_backward", "LoRA backward"), ("softmax", "softmax"),
                         ("rms_norm", "RMSNorm"), ("layer_norm", "LayerNorm"),
                         ("activation", "activations"), ("attention", "attention")])


def _frameworks_line(doc):
    """What the verdicts can say about the frameworks: PyTorch eager, torch.compile, MLX."""
    opts = doc.get("options") or {}
    if doc.get("torch"):
        parts = [f"PyTorch {doc['torch']} eager"]
        parts.append("torch.compile (mode default, fullgraph, static shapes; compile time in "
                     "the notes, not timed)" if opts.get("torch_compile")
                     else "torch.compile: not run (add --torch-compile)")
    else:
        parts = ["PyTorch: not importable on this machine (no torch or torch.compile rows)"]
    mlx = doc.get("mlx")
    if mlx is None:
        parts.append("MLX: not probed (a results.json from before the MLX probe)")
    elif mlx.get("available"):
        parts.append(f"MLX {mlx.get('version')}: importable with a CUDA device, but the bench "
                     "has no MLX rows yet")
    elif mlx.get("version"):
        parts.append(f"MLX {mlx['version']}: {mlx.get('note')}")
    else:
        parts.append(f"MLX: {mlx.get('note') or 'not importable on this machine'}")
    return "frameworks: " + "; ".join(parts)


def _where(items, limit=3):
    """"`shape` dtype (1.23x), ..." of [(factor, shape, dtype)], largest factor first."""
    items = sorted(items, reverse=True)
    text = ", ".join(f"`{s}` {d} ({f:.2f}x)" for f, s, d in items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _count(n, word):
    return f"{n} {word}{'s' * (n != 1)}"


def _vendor_custom_prose(items, ties):
    """Sentences on vendor vs custom for one family's [(key, by_impl)]."""
    pairs, only_v, only_c, neither = [], 0, 0, 0
    for (suite, _label, shape, dtype), by in items:
        v, c = _us(by, "vendor"), _us(by, "custom")
        if v and c:
            pairs.append((suite, c, v, shape, dtype))
        elif v:
            only_v += 1
        elif c:
            only_c += 1
        else:
            neither += 1
    c_wins, v_wins, n_tie = _tally(pairs, ties)
    both = len(pairs)
    out = []
    if both:
        s = f"Of {_count(both, 'case')} with both paths timed, the vendor library is faster "
        s += (f"beyond noise in {len(v_wins)} (by up to {max(v_wins)[0]:.2f}x)" if v_wins
              else "in none")
        s += (f", our kernel in {len(c_wins)} (by up to {max(c_wins)[0]:.2f}x)" if c_wins
              else ", our kernel in none")
        s += f", and {n_tie} {'is a tie' if n_tie == 1 else 'are ties'} within noise."
        out.append(s)
        if v_wins and not c_wins:
            out.append("The vendor path is worth it here: our kernel never beats it beyond "
                       f"noise (vendor ahead at {_where(v_wins)}).")
        elif c_wins and not v_wins:
            out.append(f"Our kernel is needed: it beats the vendor path wherever the two differ "
                       f"({_where(c_wins)}).")
        elif c_wins and v_wins:
            out.append(f"Split by shape: the vendor path is worth it at {_where(v_wins)}; our "
                       f"kernel is needed at {_where(c_wins)}.")
        else:
            out.append("The two are tied within noise at every shape: either will do, and the "
                       "vendor path costs nothing to keep.")
    if only_c:
        out.append(f"At {_count(only_c, 'case')} only our kernel ran (no vendor path for it "
                   "here): our kernel is needed there by construction.")
    if only_v:
        out.append(f"At {_count(only_v, 'case')} only the vendor path ran (our kernel absent, "
                   "skipped or failed).")
    if neither and not (both or only_c or only_v):
        out.append("Neither loraops path ran (see the absent/failed list below).")
    return out


def _best_row(by):
    """The faster of loraops' vendor and custom rows, or None."""
    rows = [by[i] for i in ("vendor", "custom") if _us(by, i)]
    return min(rows, key=lambda r: r["us_median"]) if rows else None


def _ceiling_prose(items, ceil=None):
    fracs = [(r["frac_of_ceiling"], r["unit"]) for _k, by in items
             for r in [_best_row(by)] if r and r.get("frac_of_ceiling") is not None]
    out = []
    if fracs:
        what = "copy bandwidth" if fracs[0][1] == "GB/s" else "vendor GEMM rate of each case's dtype"
        xs = sorted(f for f, _u in fracs)
        med = xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2
        spread = (f"median of {len(xs)} cases; {100 * xs[0]:.0f}-{100 * xs[-1]:.0f}%"
                  if len(xs) > 1 else "one case")
        out.append(f"Gap to the ceiling: the faster loraops path reaches {100 * med:.0f}% of the "
                   f"{what} measured in this run ({spread}).")
    weights = sorted(r["weight_gbps"] for _k, by in items for r in [_best_row(by)]
                     if r and r.get("weight_gbps"))
    if weights:
        out.append("Decode shapes stream their weights at "
                   + (f"{weights[0]:.3g}-{weights[-1]:.3g}" if len(weights) > 1
                      else f"{weights[0]:.3g}") + " GB/s.")
    floor = (ceil or {}).get("launch_graph_us")
    graphs = sorted((r["us_graph"], r["shape"], r["dtype"]) for _k, by in items
                    for r in (by.get(i) for i in ("vendor", "custom"))
                    if r and r["status"] == "ok" and r.get("us_graph"))
    if floor and graphs:
        best = {}
        for us, shape, dtype in graphs:  # the faster loraops path per case
            best.setdefault((shape, dtype), us)
        xs = sorted(best.values())
        if len(xs) > 1:
            out.append(f"In CUDA-graph replay (latency-bound shapes) the faster loraops path takes "
                       f"{xs[0]:.2f}-{xs[-1]:.2f} µs, {xs[0] / floor:.1f}-{xs[-1] / floor:.1f}x "
                       f"the empty-kernel floor ({floor:.2f} µs).")
        else:
            out.append(f"In CUDA-graph replay the faster loraops path takes {xs[0]:.2f} µs, "
                       f"{xs[0] / floor:.1f}x the empty-kernel floor ({floor:.2f} µs).")
    return out


def _framework_prose(items, ties, fw, name):
    pairs = [(suite, ours, theirs, shape, dtype) for (suite, _label, shape, dtype), by in items
             for ours, theirs in [(_best_loraops(by), _us(by, fw))] if ours and theirs]
    ratios = [theirs / ours for _s, ours, theirs, _sh, _d in pairs]
    wins, lose, n_tie = _tally(pairs, ties)
    failed = [by[fw] for _k, by in items if fw in by and by[fw]["status"] != "ok"]
    if not ratios:
        return [f"{name} did not run here ({failed[0]['status']}: {failed[0]['note']})."
                ] if failed else []
    g = _geomean(ratios)
    s = (f"Against {name}, loraops' faster path wins {len(wins)}, ties {n_tie} and loses "
         f"{len(lose)} of {_count(len(ratios), 'case')} ({name} / loraops geomean {g:.2f}). ")
    if not lose and wins:
        f, shape, dtype = max(wins)
        s += (f"{name} is beaten" + (" or matched" if n_tie else "") + " at every shape, by up "
              f"to {f:.2f}x (`{shape}` {dtype}).")
    elif not lose:
        s += f"{name} is matched within noise at every shape, beaten at none."
    else:
        s += f"{name} is faster at {_where(lose)}."
    if failed:
        s += f" ({name} failed at {_count(len(failed), 'case')}: see the list below.)"
    return [s]


def _verdicts(doc, cases, ties):
    families = OrderedDict()
    for key, by in cases.items():
        op = next(iter(by.values()))["op"]
        families.setdefault(op, []).append((key, by))
    lines = ["### Verdict per op family", "",
             "Generated from the numbers above; times compared per case, ties within the "
             "suite's noise floor.", "", "- " + _frameworks_line(doc), ""]
    for op, items in families.items():
        text = _vendor_custom_prose(items, ties) + _ceiling_prose(items, doc.get("ceilings"))
        for fw, name in FRAMEWORKS:
            text += _framework_prose(items, ties, fw, name)
        lines += [f"**{_FAMILIES.get(op, op)}.** " + " ".join(text), ""]
    return lines


def _decision(doc, cases):
    """Per op and dtype: how often and by how much our kernel beats the vendor's, whether auto
    picked the faster of the two, and where loraops stands against PyTorch; then the noise pair,
    LoRA against its base GEMM, and the verdict in words."""
    ties = tie_thresholds(doc)
    with_compile = any("torch.compile" in by for by in cases.values())
    return (["## Decision: vendor or custom", ""] + _decision_table(cases, ties, with_compile)
            + _noise_section(doc) + _lora_gemm_section(cases) + _verdicts(doc, cases, ties))


def _cpp_winner_flips(key, pby, cby, ties):
    """The case's vendor-or-custom winner when Python and C++ disagree beyond the suite's noise
    floor (both outcomes decided, and opposite), else None."""
    if not all(_us(by, i) for by in (pby, cby) for i in ("vendor", "custom")):
        return None
    tie = _tie(ties, key[0])
    op = _outcome(_us(pby, "custom"), _us(pby, "vendor"), tie)
    oc = _outcome(_us(cby, "custom"), _us(cby, "vendor"), tie)
    if "tie" in (op, oc) or op == oc:
        return None
    name = {"a": "custom", "b": "vendor"}
    return (f"`{key[2]}` {key[1]} {key[3]} ({name[op]} from Python, {name[oc]} from C++)")


def _cpp_section(doc, cases):
    """The loraops rows timed again from C++ (--cpp): per case and implementation, both medians,
    the host cost the Python call adds, and where the C++ winner differs from Python's."""
    cpp = doc.get("cpp")
    if not cpp:
        return []
    lines = ["## From C++ (loraops_bench)", ""]
    if cpp.get("error"):
        lines += [f"The C++ run did not complete: {cpp['error']}.", ""]
    rows = [r for r in cpp.get("results") or [] if r.get("status") == "ok"]
    if not rows:
        return lines + ["No C++ row to show.", ""]
    by_cpp = _cases(rows)
    lines += ["The same cases through the C++ API, no Python in the way (`loraops_bench`, same "
              "timing plan). Host cost = Python µs - C++ µs: what the binding adds per call.", "",
              "| suite | op | shape | dtype | impl | Python µs | C++ µs | host cost µs "
              "| Python graph µs | C++ graph µs |",
              "|---|---|---|---|---|---:|---:|---:|---:|---:|"]
    costs, flips = [], []
    ties = tie_thresholds(doc)
    for key, cby in by_cpp.items():
        pby = cases.get(key, {})
        for impl, c in cby.items():
            if impl == "reference":  # the fp64 oracle: its time decides nothing
                continue
            p = pby.get(impl)
            py_us = p["us_median"] if p and p["status"] == "ok" else None
            if py_us:
                costs.append(py_us - c["us_median"])
            lines.append(f"| {key[0]} | {key[1]} | `{key[2]}` | {key[3]} | {impl} | "
                         f"{fmt_us(py_us) if py_us else '-'} | {fmt_us(c['us_median'])} | "
                         + (f"{py_us - c['us_median']:+.1f}" if py_us else "") + " | "
                         + (fmt_us(p["us_graph"]) if p and p.get("us_graph") else "") + " | "
                         + (fmt_us(c["us_graph"]) if c.get("us_graph") else "") + " |")
        flip = _cpp_winner_flips(key, pby, cby, ties)
        if flip:
            flips.append(flip)
    if costs:
        xs = sorted(costs)
        lines += ["", f"Host cost of the Python call: median {xs[len(xs) // 2]:.1f} µs over "
                  f"{len(xs)} rows ({xs[0]:.1f} to {xs[-1]:.1f})."
                  + (" The vendor-or-custom winner changes with the caller at "
                     + ", ".join(flips[:6]) + (" ..." if len(flips) > 6 else "") + "."
                     if flips else " Beyond the noise floor, the vendor-or-custom winner is the "
                     "same from both.")]
    return lines + [""]


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
    lines += _decision(doc, cases) + _cpp_section(doc, cases) + _notes(rows)
    return "\n".join(lines)
