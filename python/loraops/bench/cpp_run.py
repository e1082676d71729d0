"""`loraops bench --cpp BINARY`: the same cases, timed again from C++ by loraops_bench
(bench/bench_cases.cpp), in the same run. The Python rows carry the binding's per-call cost; the
C++ rows do not, so the two side by side say how much of a small op's time is the host's, and
whether the vendor-or-custom winner depends on where it is called from."""

import json
import os
import subprocess

from . import cases_file


def run(binary, cases, suite, device, match, repeats, out_dir, err, timeout_s=3600):
    """Writes the cases to `out_dir`/cpp/cases.txt, runs `binary` over them (its log beside), and
    returns the ``cpp`` entry of results.json: ``{"binary", "results"}``, or ``{"binary",
    "error"}`` when the binary could not run or wrote nothing readable."""
    entry = {"binary": binary, "results": [], "error": None}
    where = os.path.join(out_dir, "cpp")
    path, out, log = (os.path.join(where, f) for f in ("cases.txt", "results.json", "log.txt"))
    try:
        os.makedirs(where, exist_ok=True)
        cases_file.write(path, cases, suite, device, match)
    except OSError as e:
        entry["error"] = f"cannot write {path}: {e}"
        return entry
    cmd = [binary, path, "--device", device, "--repeats", str(repeats), "--out", out]
    err.write(f"timing the same {len(cases)} cases from C++: {' '.join(cmd)}\n")
    try:
        with open(log, "w") as fh:
            p = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError) as e:
        entry["error"] = f"{binary} did not run: {e}"
        return entry
    try:
        with open(out) as fh:
            doc = json.load(fh)
        entry["results"] = doc["results"]
    except (OSError, ValueError, KeyError) as e:
        entry["error"] = f"{binary} exited with {p.returncode} and left no readable {out}: {e}"
        return entry
    if p.returncode != 0:
        entry["error"] = f"{binary} exited with {p.returncode} (rows written: see {log})"
    return entry
