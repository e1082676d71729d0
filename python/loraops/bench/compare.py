"""`loraops bench --compare OLD.json [--against NEW.json]`: what moved between two runs.

Rows match by (suite, op label, shape, dtype, impl). A time counts as moved only when it is out of
the other run's own noise both ways (each median outside the other's [us_min, us_max]) and more
than MIN_CHANGE off: a machine's jitter then never reads as a regression, and a 1% shift inside a
tight band does not either. The schema is checked before anything else, so a file this code cannot
read is refused before a run spends minutes measuring.
"""

import json
import math
import os
from collections import OrderedDict

from .report import fmt_us
from .run import SCHEMA, BenchError

# The results.json versions this code reads (docs/bench-schema.md: a new version means a renamed,
# removed or redefined key, which this code would misread).
UNDERSTOOD = (SCHEMA,)
MIN_CHANGE = 0.05


def load(path):
    """The results document at path, or BenchError saying why it cannot be compared."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as e:
        raise BenchError(f"cannot read {path!r} to compare: {e}") from e
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema not in UNDERSTOOD:
        raise BenchError(f"{path!r} has schema {schema!r}; this loraops reads "
                         f"{', '.join(UNDERSTOOD)} (see docs/bench-schema.md)")
    if not isinstance(doc.get("results"), list):
        raise BenchError(f"{path!r} has no \"results\" list")
    return doc


def _key(r):
    return (r["suite"], r["label"], r["shape"], r["dtype"], r["impl"])


def _outside(us, band_row):
    lo, hi = band_row.get("us_min"), band_row.get("us_max")
    if lo is None or hi is None:  # no band recorded: the median alone must do
        return us != band_row["us_median"]
    return us < lo or us > hi


def classify(old, new):
    """One of faster, slower, noise, status, added, removed, same (both not ok, same status)."""
    if old is None:
        return "added"
    if new is None:
        return "removed"
    if old["status"] != new["status"]:
        return "status"
    if old["status"] != "ok":
        return "same"
    a, b = old["us_median"], new["us_median"]
    if not a or not b:  # below the clock's resolution: no ratio to judge
        return "noise"
    ratio = b / a
    if _outside(b, old) and _outside(a, new) and abs(ratio - 1) > MIN_CHANGE:
        return "faster" if ratio < 1 else "slower"
    return "noise"


def compare(old_doc, new_doc):
    """[(kind, old_row, new_row)] for every key of either document, in new-then-old order."""
    old = OrderedDict((_key(r), r) for r in old_doc["results"])
    new = OrderedDict((_key(r), r) for r in new_doc["results"])
    keys = list(new) + [k for k in old if k not in new]
    return [(classify(old.get(k), new.get(k)), old.get(k), new.get(k)) for k in keys]


def _ratio(o, n):
    if o and n and o["status"] == n["status"] == "ok" and o["us_median"] and n["us_median"]:
        return n["us_median"] / o["us_median"]
    return None


def _state(row):
    if row is None:
        return "-"
    return fmt_us(row["us_median"]) if row["status"] == "ok" else row["status"]


# Shown in this order; "noise" and "same" rows are counted, not listed.
_SHOWN = ("slower", "faster", "status", "added", "removed")
_HEAD = ("change", "op", "shape", "dtype", "impl", "old us", "new us", "new/old")


def _cells(entries):
    out = []
    for kind in _SHOWN:
        for k, o, n in entries:
            if k != kind:
                continue
            r = n or o
            ratio = _ratio(o, n)
            change = kind if kind != "status" else f"{_state_word(o)} -> {_state_word(n)}"
            out.append((change, r["label"], r["shape"], r["dtype"], r["impl"], _state(o),
                        _state(n), f"{ratio:.2f}" if ratio else ""))
    return out


def _state_word(row):
    return row["status"] if row else "-"


def _summary(entries, old_doc, new_doc):
    count = {k: 0 for k in _SHOWN + ("noise", "same")}
    for k, _o, _n in entries:
        count[k] += 1
    ratios = [_ratio(o, n) for _k, o, n in entries if _ratio(o, n)]
    lines = [f"old: {_describe(old_doc)}", f"new: {_describe(new_doc)}"]
    if _device(old_doc) != _device(new_doc):
        lines.append("warning: different devices; ratios compare machines, not code")
    if _rotation(old_doc) != _rotation(new_doc):
        lines.append("warning: one run rotated the inputs of cases smaller than 2x L2 and the "
                     "other did not; those cases moved with the method, not the code")
    if any((d.get("options") or {}).get("quick") for d in (old_doc, new_doc)):
        lines.append("warning: a --quick run; its 3 tiny batches make a narrow band, so noise "
                     "can pass for a change")
    lines.append(f"{count['slower']} slower, {count['faster']} faster, {count['noise']} within "
                 f"noise, {count['status']} changed status, {count['added']} added, "
                 f"{count['removed']} removed"
                 + (f"; geomean new/old over {len(ratios)} timed rows "
                    f"{math.exp(sum(map(math.log, ratios)) / len(ratios)):.3f}" if ratios else ""))
    lines.append(f"moved: both medians outside the other run's [min, max] band and more than "
                 f"{MIN_CHANGE:.0%} apart")
    return lines


def _rotation(doc):
    """Whether any row of the run rotated its inputs (files from before rotation: no)."""
    return any(r.get("rotated") for r in doc.get("results") or [])


def _device(doc):
    d = doc.get("device") or {}
    return (d.get("type"), d.get("name"))


def _describe(doc):
    lo = doc.get("loraops") or {}
    return (f"{doc.get('created', '?')}, suite {doc.get('suite', '?')}, "
            f"{'/'.join(str(x) for x in _device(doc))}, loraops {lo.get('version', '?')}")


def text(entries, old_doc, new_doc):
    """Fixed-width, for the terminal."""
    lines = ["", "compare:"] + ["  " + s for s in _summary(entries, old_doc, new_doc)]
    rows = _cells(entries)
    if not rows:
        return "\n".join(lines + ["  nothing moved", ""])
    widths = [max(len(c[i]) for c in [_HEAD] + rows) for i in range(len(_HEAD))]
    for c in [_HEAD, tuple("-" * w for w in widths)] + rows:
        lines.append("  " + "  ".join(c[i].rjust(widths[i]) if i >= 5 else c[i].ljust(widths[i])
                                      for i in range(len(c))).rstrip())
    return "\n".join(lines) + "\n"


def markdown(entries, old_doc, new_doc):
    lines = ["# loraops bench: compare", ""] + [f"- {s}" for s in
                                                 _summary(entries, old_doc, new_doc)] + [""]
    rows = _cells(entries)
    if not rows:
        return "\n".join(lines + ["Nothing moved.", ""])
    lines += ["| " + " | ".join(_HEAD) + " |", "|" + "---|" * 5 + "---:|" * 3]
    lines += ["| " + " | ".join(c[:2] + (f"`{c[2]}`",) + c[3:]) + " |" for c in rows]
    return "\n".join(lines) + "\n"


def write(entries, old_doc, new_doc, out_dir):
    with open(os.path.join(out_dir, "compare.md"), "w") as fh:
        fh.write(markdown(entries, old_doc, new_doc))
