"""`loraops bench`: the real command end to end (quick), and with a fake loraops whose
implementations are missing, stubbed or broken, to show every failure becomes a row, not a crash."""

import json
import types

import numpy as np
import pytest

import loraops.cli
from loraops.bench import Options, frameworks, import_torch, run_bench, suites, timing


def _load(out_dir):
    with open(out_dir / "results.json") as fh:
        return json.load(fh)


def test_seed_quick_cpu_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = loraops.cli.main(["bench", "--suite", "seed", "--device", "cpu", "--quick",
                           "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr()
    assert printed.out.splitlines()[0].split()[:4] == ["op", "shape", "dtype", "impl"]
    assert "lora_forward" in printed.out and "rms_norm" in printed.out
    assert "[1/" in printed.err  # progress goes to stderr

    doc = _load(out)
    assert doc["schema"] == "loraops-bench/1"
    assert doc["suite"] == "seed" and doc["device"]["type"] == "cpu"
    assert set(doc["loraops"]) == {"version", "built_with_cuda", "built_with_blas"}
    cases = suites.cases("seed", "cpu")
    assert doc["impls"][:4] == ["reference", "vendor", "custom", "auto"]
    assert len(doc["results"]) == len(cases) * len(doc["impls"])
    pairs = {(r["label"], r["shape"], r["dtype"], r["impl"]) for r in doc["results"]}
    assert pairs == {(c.label, c.shape_text(), c.dtype, i) for c in cases for i in doc["impls"]}
    for r in doc["results"]:
        assert r["status"] in ("ok", "absent", "skipped", "error"), r
        if r["status"] == "ok":
            assert r["us_min"] <= r["us_median"] <= r["us_max"] and r["value"] > 0
            assert r["repeats"] >= 1 and r["batch"] >= 1
        else:
            assert r["note"], r
    # The reference exists for every op on the CPU and the seed shapes are small: it must run.
    assert all(r["status"] == "ok" for r in doc["results"] if r["impl"] == "reference")
    report = (out / "report.md").read_text()
    assert "## seed" in report and "Decision" in report


class _Unsupported(NotImplementedError):
    pass


def _fake_loraops(custom="stub"):
    """reference works, vendor is registered-absent, auto crashes, and custom is a stub raising
    UnsupportedError ("stub") or runs and returns a wrong answer ("wrong"): one of each row
    status loraops can produce."""
    def op(name):
        def call(*args, impl="auto", **kw):
            if impl == "vendor":
                raise _Unsupported(f"{name}: no vendor here")
            if impl == "auto":
                raise RuntimeError("boom")
            if impl == "custom" and custom == "stub":
                raise _Unsupported(f"{name}_custom: a stub")
            y = np.tanh(np.asarray(args[0], dtype=np.float32))  # any work: timed, not checked
            return y + 1 if impl == "custom" else y
        return call

    m = types.SimpleNamespace(UnsupportedError=_Unsupported, __version__="0.0-fake",
                              built_with_cuda=lambda: False, built_with_blas=lambda: False,
                              has_impl=lambda op, device="cpu", impl="auto", dtype="float32":
                              impl != "vendor")
    for name in ("matmul", "softmax", "rms_norm", "layer_norm", "activation", "lora_forward",
                 "lora_backward"):
        setattr(m, name, op(name))
    return m


def _run_fake(tmp_path, match, **fake):
    opts = Options(suite="all", device="cpu", out=str(tmp_path), quick=True, match=match)
    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:
        return run_bench(opts, ops=_fake_loraops(**fake), out=out, err=err)


def test_failures_become_rows(tmp_path):
    doc = _run_fake(tmp_path, "[4,16,1024]")
    by_impl = {}
    for r in doc["results"]:
        by_impl.setdefault(r["impl"], set()).add(r["status"])
    assert by_impl["reference"] == {"ok"}
    assert by_impl["vendor"] == {"absent"} and by_impl["custom"] == {"absent"}
    assert by_impl["auto"] == {"error"}
    notes = {r["impl"]: r["note"] for r in doc["results"]}
    assert "no vendor here" in notes["vendor"] and "a stub" in notes["custom"]
    assert "RuntimeError: boom" in notes["auto"]
    assert len(doc["results"]) == 3 * len(doc["impls"])  # softmax, rms_norm, layer_norm
    assert "failed" in (tmp_path / "report.md").read_text()


def test_wrong_answers_are_flagged(tmp_path):
    doc = _run_fake(tmp_path, "softmax [4,16,1024]", custom="wrong")
    custom = next(r for r in doc["results"] if r["impl"] == "custom")
    assert custom["status"] == "ok" and custom["checked_against"] == "reference"
    assert custom["note"].startswith("MISMATCH") and custom["max_rel_err"] > 0.5


def test_input_failure_is_an_error_row(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise MemoryError("no room")

    monkeypatch.setattr(frameworks, "make_inputs", broken)
    doc = _run_fake(tmp_path, "softmax [4,16,1024]")
    assert {r["status"] for r in doc["results"]} == {"error"}
    assert all("MemoryError" in r["note"] for r in doc["results"])


def test_suites_are_well_formed():
    seed_cpu, seed_cuda = suites.cases("seed", "cpu"), suites.cases("seed", "cuda")
    assert [c.shape_text() for c in seed_cpu] == [c.shape_text() for c in seed_cuda]
    assert len(seed_cpu) == 7 + 3  # K in 3 sizes + 4 more ranks; three row ops
    for device in ("cpu", "cuda"):
        every = suites.cases("all", device, ("float16", "bfloat16"))
        assert len(every) == len(set(every))
        assert {c.op for c in every} >= {"lora_forward", "lora_backward", "matmul", "softmax",
                                         "activation"}
        for c in every:  # every case can say its size
            assert c.bytes() > 0 and (c.is_row_op or c.flops() > 0)
    # Every LoRA forward case of the lora suite has its base GEMM alongside.
    lora = suites.cases("lora", "cuda")
    gemms = {(c.m, c.k, c.n) for c in lora if c.op == "matmul"}
    assert all((c.m, c.k, c.n) in gemms for c in lora if c.op == "lora_forward")


def test_reference_size_rule():
    big = suites.Case("lora", "lora_forward", "float32", (256, 2048), n=2048, r=8)
    small = suites.Case("lora", "lora_forward", "float32", (256, 1024), n=1024, r=8)
    assert big.reference_too_big() and not small.reference_too_big()
    assert suites.Case("rowwise", "softmax", "float32", (16384, 4096)).reference_too_big()


def test_cpu_timer_plan():
    t = timing.time_cpu(lambda: sum(range(100)), repeats=5, quick=True)
    assert t.repeats == 5 and 1 <= t.batch <= timing.QUICK_MAX_BATCH
    assert 0 < t.us_min <= t.us_q1 <= t.us_median <= t.us_q3 <= t.us_max
    # A slow call gets fewer repeats, but never fewer than three.
    assert timing.plan(1.0, 20, False, timing.CPU_TARGET_S) == (1, 3)


def test_cuda_without_gpu_is_a_clear_error(capsys):
    torch = import_torch()
    if torch is not None and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert loraops.cli.main(["bench", "--device", "cuda", "--out", "/nonexistent"]) == 2
    assert "--device cuda" in capsys.readouterr().err


# ---- --compare, the schema, the plots -------------------------------------------------------


def _row(impl, us=None, spread=0.02, status="ok", shape="[4,16,1024]", label="softmax"):
    timed = status == "ok"
    return {"suite": "seed", "op": label, "label": label, "shape": shape, "dtype": "float32",
            "impl": impl, "status": status, "note": "" if timed else "why",
            "us_median": us if timed else None,
            "us_min": us * (1 - spread) if timed else None,
            "us_max": us * (1 + spread) if timed else None}


def _doc(rows):
    return {"schema": "loraops-bench/1", "created": "2025-01-01T00:00:00+00:00", "suite": "seed",
            "device": {"type": "cpu", "name": "test cpu"}, "loraops": {"version": "0"},
            "options": {"repeats": 20, "quick": False}, "results": rows}


def _synthetic_pair():
    """vendor moved (2x slower, bands apart), custom within noise (8% but wide bands overlap),
    auto inside 5% with tight bands, reference went ok -> error, torch vanished, an added case."""
    old = _doc([_row("vendor", 100), _row("custom", 50, spread=0.2), _row("auto", 40, 0.001),
                _row("reference", 900), _row("torch", 60)])
    new = _doc([_row("vendor", 200), _row("custom", 54, spread=0.2), _row("auto", 41, 0.001),
                _row("reference", status="error"), _row("custom", 30, shape="[8,1024]")])
    return old, new


def test_compare_classifies_rows():
    from loraops.bench import compare

    old, new = _synthetic_pair()
    kinds = {(n or o)["impl"] + " " + (n or o)["shape"]: k
             for k, o, n in compare.compare(old, new)}
    assert kinds == {"vendor [4,16,1024]": "slower", "custom [4,16,1024]": "noise",
                     "auto [4,16,1024]": "noise", "reference [4,16,1024]": "status",
                     "torch [4,16,1024]": "removed", "custom [8,1024]": "added"}
    # Out of band one way only is still noise: the new median must leave the old band and back.
    assert compare.classify(_row("vendor", 100, 0.01), _row("vendor", 120, 0.5)) == "noise"
    assert compare.classify(_row("vendor", 100, 0.01), _row("vendor", 80, 0.01)) == "faster"
    text = compare.text(compare.compare(old, new), old, new)
    assert "1 slower, 0 faster, 2 within noise, 1 changed status, 1 added, 1 removed" in text
    lines = text.splitlines()
    assert any(ln.split()[:1] == ["slower"] and ln.split()[-1] == "2.00" for ln in lines)
    assert any("ok -> error" in ln for ln in lines)
    assert not any(ln.split()[-2:] == ["54.0", "1.08"] for ln in lines)  # noise is not listed
    md = compare.markdown(compare.compare(old, new), old, new)
    assert "| slower | softmax | `[4,16,1024]` | float32 | vendor | 100.0 | 200.0 | 2.00 |" in md


def _write(path, doc):
    path.write_text(json.dumps(doc))
    return str(path)


def test_compare_cli_files_only_and_schema_refusal(tmp_path, capsys):
    old, new = _synthetic_pair()
    old_p, new_p = _write(tmp_path / "old.json", old), _write(tmp_path / "new.json", new)
    assert loraops.cli.main(["bench", "--compare", old_p, "--against", new_p,
                             "--out", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert "slower" in out and "added" in out and "removed" in out
    assert not (tmp_path / "none").exists()  # --against runs nothing and writes nothing

    future = dict(new, schema="loraops-bench/2")
    bad_p = _write(tmp_path / "future.json", future)
    assert loraops.cli.main(["bench", "--compare", old_p, "--against", bad_p]) == 2
    err = capsys.readouterr().err
    assert "loraops-bench/2" in err and "loraops-bench/1" in err
    assert loraops.cli.main(["bench", "--compare", _write(tmp_path / "x.json", {"a": 1}),
                             "--against", new_p]) == 2
    assert loraops.cli.main(["bench", "--against", new_p]) == 2
    assert "--compare" in capsys.readouterr().err
    # With a run: the refusal comes before any measuring, so nothing is written.
    assert loraops.cli.main(["bench", "--device", "cpu", "--compare", bad_p,
                             "--out", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()


def test_run_with_compare_writes_compare_md_and_plots(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _run_fake(tmp_path / "a", "softmax [4,16,1024]")
    opts = Options(suite="all", device="cpu", out=str(tmp_path / "b"), quick=True,
                   match="[4,16,1024]", compare=str(tmp_path / "a" / "results.json"))
    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:
        run_bench(opts, ops=_fake_loraops(), out=out, err=err)
    assert first["results"]
    compare_md = (tmp_path / "b" / "compare.md").read_text()
    assert compare_md.startswith("# loraops bench: compare")
    assert "| added | rms_norm |" in compare_md  # only softmax ran the first time
    assert "compare:" in (tmp_path / "stdout").read_text()
    report = (tmp_path / "b" / "report.md").read_text()
    assert "schema `loraops-bench/1`" in report
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "plots: matplotlib not installed" in report
        pytest.skip("matplotlib not installed: no PNG to check")
    png = tmp_path / "b" / "seed.png"  # the [4,16,1024] row-op cases are the seed suite's
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![suite seed" in report and "(seed.png)" in report


def test_no_matplotlib_is_a_line_not_a_failure(tmp_path, monkeypatch):
    from loraops.bench import plot

    monkeypatch.setattr(plot, "_pyplot", lambda: None)
    _run_fake(tmp_path, "softmax [4,16,1024]")
    report = (tmp_path / "report.md").read_text()
    assert "- plots: matplotlib not installed" in report and ".png" not in report
    assert not list(tmp_path.glob("*.png"))
