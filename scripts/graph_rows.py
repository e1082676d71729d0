#!/usr/bin/env python3
"""Print a bench run's CUDA-graph figures, one row per case and implementation.

The report shows graph times only inside its notes, so a device call that brings back report.md
alone loses them; this prints them from results.json (docs/bench-schema.md: `us_graph`).
usage: scripts/graph_rows.py RESULTS_JSON [more.json ...]"""
import json
import sys


def rows(doc):
    for r in doc.get("results") or []:
        if r.get("us_graph") is not None:
            yield (f"{r.get('op', '?')} {r.get('shape', '?')} {r.get('dtype', '?')} {r.get('impl', '?')}",
                   r.get("us_median"), r["us_graph"])


def main(paths):
    for path in paths:
        with open(path) as f:
            found = list(rows(json.load(f)))
        print(f"--- graph replay (µs per call) from {path}: {len(found)} rows")
        for name, us, graph in found:
            eager = f"{us:10.2f}" if us is not None else f"{'-':>10}"
            print(f"{name:70.70s} eager {eager}  graph {graph:8.2f}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
