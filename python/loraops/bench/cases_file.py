"""`loraops bench --emit-cases FILE`: the selected cases as a line-based text file, so a program
without a JSON parser (bench/bench_cases.cpp, the `loraops_bench` binary) times the same cases as
`loraops bench` does. The suites stay defined once, in suites.py; this module only writes them out
(and reads them back, for the tests). Format: docs/bench-schema.md, "Cases file".

    # loraops-cases/1 suite=seed device=cpu match=
    suite=seed op=lora_forward dtype=float32 x=1,1,512 n=512 r=8 kind= scale=2 dim=-1 eps=0
"""

from urllib.parse import quote, unquote

from .frameworks import LN_EPS, RMS_EPS
from .suites import LORA_SCALE, Case

FORMAT = "loraops-cases/1"
# Every line carries every key, in this order (a reader ignores keys it does not know).
KEYS = ("suite", "op", "dtype", "x", "n", "r", "kind", "scale", "dim", "eps", "sk", "hkv", "causal")


def _num(v):
    """A float as short text that C++'s strtod reads back exactly: 2.0 -> "2", 1e-06 -> "1e-06"."""
    return repr(int(v)) if float(v).is_integer() else repr(float(v))


def case_fields(case):
    """{key: text} of one case: suites.Case's fields, plus the op's scalars that frameworks.py
    passes (LoRA's scale, the row dim, the norms' eps; 0 where the op has none)."""
    scale = LORA_SCALE if case.op.startswith("lora") else 0
    eps = {"rms_norm": RMS_EPS, "layer_norm": LN_EPS}.get(case.op, 0)
    return {"suite": case.suite, "op": case.op, "dtype": case.dtype,
            "x": ",".join(str(int(d)) for d in case.x), "n": str(int(case.n)),
            "r": str(int(case.r)), "kind": case.kind, "scale": _num(scale), "dim": "-1",
            "eps": _num(eps), "sk": str(int(case.sk)), "hkv": str(int(case.hkv)),
            "causal": "1" if case.causal else "0"}


def format_case(case):
    fields = case_fields(case)
    for k, v in fields.items():
        if any(c.isspace() for c in v) or "=" in v:
            raise ValueError(f"case field {k}={v!r} cannot be written to a cases file")
    return " ".join(f"{k}={fields[k]}" for k in KEYS)


def header(suite, device, match):
    # --match may hold spaces ("softmax [4"): percent-encoded, as the header splits on whitespace.
    return f"# {FORMAT} suite={suite} device={device} match={quote(match or '', safe='')}"


def text(cases, suite, device, match=""):
    return "\n".join([header(suite, device, match)] + [format_case(c) for c in cases]) + "\n"


def write(path, cases, suite, device, match=""):
    with open(path, "w") as fh:
        fh.write(text(cases, suite, device, match))


def parse_line(line):
    """{key: text} of one case line (no validation)."""
    out = {}
    for token in line.split():
        key, sep, value = token.partition("=")
        if not sep:
            raise ValueError(f"not key=value: {token!r}")
        out[key] = value
    return out


def read(path):
    """(header {key: text}, [Case]) of a cases file; raises ValueError on a foreign format."""
    with open(path) as fh:
        lines = fh.read().splitlines()
    if not lines or not lines[0].startswith("# ") or lines[0].split()[1] != FORMAT:
        raise ValueError(f"{path!r} does not start with '# {FORMAT}'")
    head = parse_line(" ".join(lines[0].split()[2:]))
    head["match"] = unquote(head.get("match", ""))
    cases = []
    for line in lines[1:]:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        f = parse_line(line)
        cases.append(Case(f["suite"], f["op"], f["dtype"], tuple(int(d) for d in f["x"].split(",")),
                          n=int(f.get("n", 0)), r=int(f.get("r", 0)), kind=f.get("kind", ""),
                          sk=int(f.get("sk", 0)), hkv=int(f.get("hkv", 0)),
                          causal=f.get("causal", "0") == "1"))
    return head, cases
