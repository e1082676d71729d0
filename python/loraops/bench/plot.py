"""One chart per suite, DIR/<suite>.png: a group of horizontal bars per case (op shape dtype), one
bar per implementation, so "is custom shorter than vendor" reads at a glance.

x is µs on a log scale (cases span four decades), or % of the ceiling when every timed row of the
suite reaches at least 5% of one (then the bars say how close to the roofline, which µs cannot). matplotlib is
optional and imported only here, lazily: the bench must run without it.
"""

import os
from collections import OrderedDict

from .report import IMPL_ORDER

# One colour per implementation, the same in every chart.
_COLOURS = {"reference": "#9e9e9e", "vendor": "#1f77b4", "custom": "#d62728", "auto": "#ff7f0e",
            "torch": "#2ca02c", "torch.compile": "#8c564b"}
_BAR_IN = 0.13      # inches of height per bar: labels stay legible however many cases


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display on a bench machine
        import matplotlib.pyplot as plt
    except Exception:  # absent or broken: either way no plots, said so in report.md
        return None
    return plt


def write(doc, out_dir):
    """({suite: file name}, None) or ({}, why there are no plots)."""
    plt = _pyplot()
    if plt is None:
        return {}, "matplotlib not installed"
    files = OrderedDict()
    for suite in OrderedDict.fromkeys(r["suite"] for r in doc["results"]):
        rows = [r for r in doc["results"] if r["suite"] == suite]
        name = f"{suite}.png"
        try:
            _chart(plt, suite, rows, os.path.join(out_dir, name))
        except Exception as e:  # a chart is not worth losing the report over
            return files, f"plotting failed: {type(e).__name__}: {e}"
        files[suite] = name
    return files, None


def _chart(plt, suite, rows, path):
    cases = OrderedDict()
    for r in rows:
        cases.setdefault(f"{r['label']} {r['shape']} {r['dtype']}", {})[r["impl"]] = r
    impls = [i for i in IMPL_ORDER if any(i in by for by in cases.values())]
    timed = [r for r in rows if r["status"] == "ok"]
    # % of ceiling only where it says something: a latency-bound suite (the seed shapes sit at
    # 0-2% of copy bandwidth on the H200) reads better in µs.
    as_frac = bool(timed) and all((r.get("frac_of_ceiling") or 0) >= 0.05 for r in timed)

    n_bars = len(impls) + 1  # +1: a gap between cases
    fig, ax = plt.subplots(figsize=(10, 1.2 + _BAR_IN * n_bars * len(cases)))
    for j, impl in enumerate(impls):
        ys, xs = [], []
        for c, by in enumerate(cases.values()):
            r = by.get(impl)
            y = c * n_bars + j
            if r is None:
                continue
            if r["status"] != "ok" or not r["us_median"]:
                # A bar that is not there must not read as "zero time": say why in its place.
                ax.text(0.005, y, r["status"], transform=ax.get_yaxis_transform(), va="center",
                        fontsize=6, color=_COLOURS.get(impl, "k"))
                continue
            ys.append(y)
            xs.append(100 * r["frac_of_ceiling"] if as_frac else r["us_median"])
        ax.barh(ys, xs, height=0.9, color=_COLOURS.get(impl), label=impl)
    ax.set_yticks([c * n_bars + (len(impls) - 1) / 2 for c in range(len(cases))])
    ax.set_yticklabels(list(cases), fontsize=7)
    ax.invert_yaxis()  # run order, top to bottom, as in report.md
    if as_frac:
        ax.set_xlabel("% of ceiling (copy bandwidth, or the vendor GEMM rate of the case's dtype); longer is better")
    else:
        ax.set_xscale("log")
        ax.set_xlabel("µs per call (log scale); shorter is better")
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"loraops bench: suite {suite}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
