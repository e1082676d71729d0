"""`loraops bench`: the real command end to end (quick), and with a fake loraops whose
implementations are missing, stubbed or broken, to show every failure becomes a row, not a crash."""

import json
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

import loraops.cli
from loraops.bench import Options, frameworks, import_torch, run, run_bench, suites, timing
from loraops.bench.report import fmt_us


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
    # The noise pairs: the suite's first case (and its heaviest) again, outside `results`, and
    # the verdicts.
    first = cases[0]
    assert doc["repeat_rows"] and all(r["repeat"] for r in doc["repeat_rows"])
    assert doc["repeat_rows"][0]["shape"] == first.shape_text()
    assert {n["suite"] for n in doc["noise"]} == {"seed"} and len(doc["noise"]) <= 2
    assert "### Noise" in report and "### Verdict per op family" in report
    assert "**LoRA forward.**" in report and "**RMSNorm.**" in report
    assert all(r["input_copies"] == 1 and not r["rotated"] for r in doc["results"])
    if not doc["mlx"]["available"]:
        assert f"MLX: {doc['mlx']['note']}" in report


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
                                         "activation", "attention"}
        for c in every:  # every case can say its size
            assert c.bytes() > 0 and (c.is_row_op or c.flops() > 0)
    # Every LoRA forward case of the lora suite has its base GEMM alongside.
    lora = suites.cases("lora", "cuda")
    gemms = {(c.m, c.k, c.n) for c in lora if c.op == "matmul"}
    assert all((c.m, c.k, c.n) in gemms for c in lora if c.op == "lora_forward")


def test_attention_cases():
    """Attention's formulas: FlashAttention's FLOP count over the visible (query, key) pairs of
    the bottom-right causal mask, bytes of q, out, k and v; causal cases keep Sq == Sk (where
    PyTorch's top-left is_causal agrees)."""
    c = suites.Case("attention", "attention", "bfloat16", (2, 8, 128, 64), sk=128, hkv=2,
                    causal=True)
    assert c.visible_pairs() == 128 * 129 // 2 and c.flops() == 4 * 2 * 8 * 64 * 128 * 129 // 2
    assert c.bytes() == 2 * (2 * 2 * 8 * 128 * 64 + 2 * 2 * 2 * 128 * 64)
    assert c.shape_text() == "q[2,8,128,64] kv[2,128] causal" and not c.is_decode
    wide = suites.Case("attention", "attention", "float32", (1, 1, 3, 8), sk=5, hkv=1, causal=True)
    assert wide.visible_pairs() == 3 + 4 + 5  # row i sees keys j <= i + 2
    tall = suites.Case("attention", "attention", "float32", (1, 1, 5, 8), sk=3, hkv=1, causal=True)
    assert tall.visible_pairs() == 0 + 0 + 1 + 2 + 3
    dec = suites.Case("attention", "attention", "bfloat16", (1, 32, 1, 128), sk=4096, hkv=8)
    assert dec.is_decode and dec.weight_bytes() == 2 * 8 * 4096 * 128 * 2
    for device in ("cpu", "cuda"):
        for a in suites.cases("attention", device):
            assert a.x[2] == a.sk or not a.causal, a
            assert a.x[1] % a.hkv == 0
    assert {c.args()["causal"] for c in suites.cases("attention", "cuda")} == {True, False}


def test_sdpa_backends_only_for_attention_on_cuda():
    r = run.Runner.__new__(run.Runner)
    r.impls = run.IMPLS + (run.TORCH,)
    r.sdpa = run.SDPA_IMPLS
    attn = suites.cases("attention", "cuda")[0]
    lora = suites.cases("lora", "cuda")[0]
    assert r.impls_for(attn) == run.IMPLS + (run.TORCH,) + run.SDPA_IMPLS
    assert r.impls_for(lora) == run.IMPLS + (run.TORCH,)
    r.impls = run.IMPLS + (run.TORCH, run.TORCH_COMPILE)
    assert r.impls_for(attn)[-1] == run.TORCH_COMPILE  # compile stays last, as the report orders
    assert run.SDPA_IMPLS == ("torch.flash", "torch.efficient", "torch.cudnn")


def test_gemm_rows_are_fractions_of_their_dtypes_gemm():
    # A float32 GEMM at 50 TFLOP/s is not 6% of anything: its ceiling is the fp32 GEMM.
    from loraops.bench import ceilings
    ceil = {"copy_gbps": 4000.0, "gemm_tflops": 760.0, "gemm_tflops_fp32": 51.0}
    fp32 = {"unit": "TFLOP/s", "value": 49.7, "dtype": "float32"}
    bf16 = {"unit": "TFLOP/s", "value": 689.0, "dtype": "bfloat16"}
    rows = {"unit": "GB/s", "value": 3800.0, "dtype": "float32"}
    assert ceilings.fraction(fp32, ceil) == pytest.approx(49.7 / 51.0)
    assert ceilings.fraction(bf16, ceil) == pytest.approx(689.0 / 760.0)
    assert ceilings.fraction(rows, ceil) == pytest.approx(0.95)
    # An older results file has no fp32 ceiling: no fraction rather than the bf16 one.
    assert ceilings.fraction(fp32, {"gemm_tflops": 760.0}) is None


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


# ---- torch.compile rows, the noise pair, input rotation, the verdicts -------------------------


def _np_softmax(x, dim=-1):
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def _fake_torch(compile_fn):
    """Just enough of torch for the softmax case on the CPU: numpy arrays are its tensors."""
    resets = []
    fake = types.SimpleNamespace(
        __version__="0.0-faketorch", Tensor=np.ndarray, from_numpy=lambda a: a,
        bfloat16="bfloat16", softmax=_np_softmax, compile=compile_fn,
        nn=types.SimpleNamespace(functional=types.SimpleNamespace()),
        _dynamo=types.SimpleNamespace(reset=lambda: resets.append(1)),
        get_num_threads=lambda: 1, cuda=types.SimpleNamespace(is_available=lambda: False))
    return fake, resets


def _run_with_torch(tmp_path, monkeypatch, compile_fn, torch_compile=True,
                    match="softmax [4,16,1024]"):
    from loraops.bench import run

    fake, resets = _fake_torch(compile_fn)
    monkeypatch.setattr(run, "import_torch", lambda: fake)
    opts = Options(suite="all", device="cpu", out=str(tmp_path), quick=True, match=match,
                   torch_compile=torch_compile)
    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:
        return run_bench(opts, ops=_fake_loraops(custom="wrong"), out=out, err=err), resets


def test_torch_compile_rows(tmp_path, monkeypatch):
    seen = []

    def compile_ok(f, **kw):
        seen.append(kw)
        return f

    doc, resets = _run_with_torch(tmp_path, monkeypatch, compile_ok)
    assert doc["impls"][-2:] == ["torch", "torch.compile"]
    assert doc["options"]["torch_compile"] is True
    row = next(r for r in doc["results"] if r["impl"] == "torch.compile")
    assert row["status"] == "ok" and row["compile_s"] >= 0 and "compiled in" in row["note"]
    eager = next(r for r in doc["results"] if r["impl"] == "torch")
    # Checked like every row (the fake reference is tanh, so both PyTorch rows mismatch alike).
    assert row["checked_against"] == "reference" and row["max_rel_err"] == eager["max_rel_err"]
    assert seen and seen[0] == {"mode": "default", "fullgraph": True, "dynamic": False}
    assert resets  # dynamo's caches are cleared before each case's compile
    report = (tmp_path / "report.md").read_text()
    assert "torch.compile / best loraops" in report and "Against torch.compile" in report


def test_torch_compile_failure_is_a_row_note(tmp_path, monkeypatch):
    def compile_broken(f, **kw):
        def compiled(*a):
            raise RuntimeError("inductor exploded")
        return compiled

    doc, _ = _run_with_torch(tmp_path, monkeypatch, compile_broken, match="[4,16,1024]")
    rows = [r for r in doc["results"] if r["impl"] == "torch.compile"]
    assert len(rows) == 3  # every case tried, none stopped the run
    assert all(r["status"] == "error" and r["note"].startswith("torch.compile failed: "
                                                               "RuntimeError: inductor exploded")
               for r in rows)
    assert all(r["status"] == "ok" for r in doc["results"] if r["impl"] == "reference")


def test_torch_compile_is_off_by_default(tmp_path, monkeypatch):
    def compile_never(f, **kw):
        raise AssertionError("compiled without --torch-compile")

    doc, _ = _run_with_torch(tmp_path, monkeypatch, compile_never, torch_compile=False)
    assert "torch.compile" not in doc["impls"] and "torch" in doc["impls"]
    assert "torch.compile: not run (add --torch-compile)" in (tmp_path / "report.md").read_text()
    assert loraops.cli._parser().parse_args(["bench", "--torch-compile"]).torch_compile
    assert not loraops.cli._parser().parse_args(["bench"]).torch_compile


def test_noise_pair(tmp_path):
    doc = _run_fake(tmp_path, "[4,16,1024]")
    assert len(doc["results"]) == 3 * len(doc["impls"])  # the repeat is not a results row
    first = [r for r in doc["results"] if r["label"] == "softmax" and r["status"] == "ok"]
    reps = doc["repeat_rows"]
    assert [r["impl"] for r in reps] == [r["impl"] for r in first] and reps
    assert all(r["repeat"] is True and r["label"] == "softmax" for r in reps)
    (noise,) = doc["noise"]
    assert noise["suite"] == "seed" and noise["shape"] == "[4,16,1024]"
    pair = noise["pairs"][0]
    assert pair["us_first"] > 0 and pair["us_repeat"] > 0
    gaps = [max(p["us_first"], p["us_repeat"]) / min(p["us_first"], p["us_repeat"]) - 1
            for p in noise["pairs"] if p["impl"] in ("vendor", "custom", "auto")]
    # the floor counts loraops' vendor/custom/auto pairs only (here: none ran, so no floor)
    assert noise["floor"] == (pytest.approx(max(gaps)) if gaps else None)
    report = (tmp_path / "report.md").read_text()
    assert "### Noise" in report and "Noise floor: " in report
    assert "noise (seed): softmax [4,16,1024] float32 run twice" in (tmp_path / "stdout").read_text()
    assert "[repeat] softmax" in (tmp_path / "stderr").read_text()


def test_noise_cases_are_the_first_and_the_heaviest(tmp_path):
    """Each suite repeats its first case and its heaviest (largest vendor/custom median); the
    tie margin is the larger floor, and framework pairs do not raise it."""
    from loraops.bench import report

    opts = Options(suite="seed", device="cpu", out=str(tmp_path), quick=True,
                   match="lora_forward")
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        doc = run_bench(opts, out=out, err=err)
    rows = [r for r in doc["results"] if r["status"] == "ok" and r["impl"] in ("vendor", "custom")]
    heaviest = max(rows, key=lambda r: r["us_median"])["shape"]
    first = doc["results"][0]["shape"]
    # (on a loaded machine the first, smallest case can time slowest: then it is repeated once)
    want = [first] if heaviest == first else [first, heaviest]
    assert [n["shape"] for n in doc["noise"]] == want
    assert {r["shape"] for r in doc["repeat_rows"]} == set(want)
    floors = [n["floor"] for n in doc["noise"]]
    assert report.tie_thresholds(doc)["seed"] == pytest.approx(max(floors + [report.TIE_MIN]))
    # a framework pair's gap is shown but does not count
    fake = {"suite": "s", "label": "l", "shape": "x", "dtype": "float32", "impl": "custom",
            "status": "ok", "us_median": 10.0}
    reps = [dict(fake, us_median=10.5), dict(fake, impl="torch", us_median=30.0)]
    (entry,) = report.noise([fake, dict(fake, impl="torch")], reps)
    assert entry["floor"] == pytest.approx(0.05) and len(entry["pairs"]) == 2


def test_rotation_plan_and_cpu_rows(tmp_path):
    # Under 2x L2 -> copies whose inputs alone pass 2x L2; at or over it -> none.
    l2 = 50 * 2**20
    assert frameworks.copies_needed(512 << 10, 256 << 10, 2 * l2) == 401
    assert frameworks.copies_needed(2 * l2, 2 * l2, 2 * l2) == 1
    assert frameworks.copies_needed(10, 1, 2 * l2, cap=64) == 64
    assert frameworks.copies_needed(10, 10, 0) == 1
    from loraops.bench import run

    case = suites.Case("seed", "softmax", "float32", (4, 16, 1024))
    inputs = run._Inputs(case, "cpu", None, rotate=(4 * case.bytes(), 1024))
    copies = inputs.native_copies
    assert len(copies) == 9  # 4x (read + written) bytes over the 256 KiB input, plus one
    assert copies[0] is inputs.native and copies[1]["x"] is not copies[0]["x"]
    assert np.array_equal(copies[1]["x"], copies[0]["x"])
    doc = _run_fake(tmp_path, "softmax [4,16,1024]")  # CPU: never rotated
    assert all(r["input_copies"] == 1 and r["rotated"] is False for r in doc["results"])
    assert doc["options"]["rotate_below_bytes"] is None


def _fake_cuda_torch():
    class Event:
        def __init__(self, enable_timing=False):
            pass

        def record(self):
            pass

        def synchronize(self):
            pass

        def elapsed_time(self, other):
            return 1.0  # ms

    return types.SimpleNamespace(cuda=types.SimpleNamespace(Event=Event, synchronize=lambda: None))


def test_cuda_timer_rotates_across_batches():
    fake = _fake_cuda_torch()
    calls = []
    fns = [lambda i=i: calls.append(i) or i for i in range(3)]
    t = timing.time_cuda(fns, repeats=3, quick=True, torch=fake)
    assert t.batch == 1 and t.repeats == 3 and t.output == 0
    assert calls == [0, 0, 0, 1, 2]  # warm-up and probe on the first copy, then a full cycle
    calls.clear()
    timing.time_cuda(fns[0], repeats=3, quick=True, torch=fake)  # one callable: no rotation
    assert calls == [0] * 5


def test_interleaved_timer_takes_turns():
    calls = []
    a = [lambda i=i: calls.append(("a", i)) for i in range(2)]
    b = [lambda: calls.append(("b", 0))]
    ts = timing.time_cuda_interleaved([a, b], [3, 1], rounds=2, torch=_fake_cuda_torch())
    # round by round, each implementation's batch in turn, a's copies cycling across its batches
    assert calls == [("a", 0), ("a", 1), ("a", 0), ("b", 0), ("a", 1), ("a", 0), ("a", 1), ("b", 0)]
    assert [t.repeats for t in ts] == [2, 2] and [t.batch for t in ts] == [3, 1]
    assert [t.us_median for t in ts] == pytest.approx([1000.0 / 3, 1000.0])


def test_gemm_bound_cuda_cases_are_timed_again_in_turns(monkeypatch):
    r = run.Runner.__new__(run.Runner)
    r.device, r.opts, r.torch = "cuda", Options(), None
    case = next(c for c in suites.cases("lora", "cuda") if c.op == "lora_forward" and not c.is_decode)

    def rows(us_list):
        out = []
        for impl, us in zip(("vendor", "custom"), us_list):
            row = run._row(case, impl, "cuda")
            run._fill_timing(row, case, timing.Timing(us, us, us, us, us, 20, 2))
            out.append(row)
        return out

    seen = []

    def fake(fn_lists, batches, rounds, torch):
        seen.append((len(fn_lists), batches, rounds))
        return [timing.Timing(us, us, us, us, us, rounds, b) for us, b in zip((410.0, 420.0), batches)]

    monkeypatch.setattr(timing, "time_cuda_interleaved", fake)
    slow = rows((400.0, 450.0))
    r.interleave(case, slow, {"vendor": ([print], 2), "custom": ([print], 2)})
    assert seen == [(2, [2, 2], run.INTERLEAVE_ROUNDS)]
    assert [x["us_median"] for x in slow] == [410.0, 420.0]
    assert [x["us_sequential"] for x in slow] == [400.0, 450.0]
    assert slow[0]["value"] == pytest.approx(case.flops() / 410.0 * 1e-6)
    assert all("interleaved" in x["note"] for x in slow)
    fast = rows((20.0, 30.0))  # below INTERLEAVE_ABOVE_US: left as timed
    r.interleave(case, fast, {"vendor": ([print], 2), "custom": ([print], 2)})
    assert len(seen) == 1 and fast[0]["us_median"] == 20.0 and fast[0]["us_sequential"] is None
    one = rows((400.0, 450.0))[:1]  # one implementation: nothing to take turns with
    r.interleave(case, one, {"vendor": ([print], 2)})
    assert len(seen) == 1


def _timed(impl, us, label="softmax", shape="[4,16,1024]", op=None, args=None, suite="seed",
           frac=None):
    r = _row(impl, us, label=label, shape=shape)
    r.update(suite=suite, op=op or label, args=args or {"x": [4, 16, 1024]}, unit="GB/s",
             value=1.0, frac_of_ceiling=frac, weight_gbps=None)
    return r


def _report_doc(rows, noise=None, torch="2.0", compile_=False, mlx=None):
    doc = _doc(rows)
    doc.update(torch=torch, mlx=mlx or {"available": False, "version": None,
                                        "note": "not importable on this machine"},
               noise=noise or [], ceilings={"copy_gbps": 10.0, "gemm_tflops": None},
               interrupted=False)
    doc["options"]["torch_compile"] = compile_
    doc["device"].update(platform="p", cpu="c", usable_cores=1, cpu_count=1, python="3",
                         numpy="2")
    return doc


def test_decision_calls_ties_within_noise_and_writes_verdicts():
    from loraops.bench import report

    rows = [_timed("vendor", 100.0, frac=0.5), _timed("custom", 99.0, frac=0.51),
            _timed("torch", 150.0),
            _timed("vendor", 100.0, shape="[8,1024]", frac=0.4),
            _timed("custom", 50.0, shape="[8,1024]", frac=0.8),
            _timed("torch", 45.0, shape="[8,1024]")]
    noise = [{"suite": "seed", "label": "softmax", "shape": "[4,16,1024]", "dtype": "float32",
              "pairs": [{"impl": "custom", "us_first": 99.0, "us_repeat": 101.0,
                         "diff": 2 / 99}], "floor": 2 / 99}]
    doc = _report_doc(rows, noise=noise)
    assert report.tie_thresholds(doc) == {"seed": pytest.approx(2 / 99)}
    md = report.markdown(doc)
    # 1% apart is a tie under a 2% floor; 2x apart is a custom win.
    assert "| softmax | float32 | 2 | 1 / 0 / 1 |" in md
    assert "| seed | softmax `[4,16,1024]` float32 | custom | 99.0 | 101.0 | +2.0% |" in md
    assert "Our kernel is needed: it beats the vendor path wherever the two differ " \
           "(`[8,1024]` float32 (2.00x))" in md
    assert "median of 2 cases" in md
    assert "Against PyTorch eager, loraops' faster path wins 1, ties 0 and loses 1 of 2 cases" \
           in md and "PyTorch eager is faster at `[8,1024]` float32 (1.11x)" in md
    assert "MLX: not importable on this machine" in md
    assert "torch.compile: not run (add --torch-compile)" in md
    # No noise measured: the default margin, said so.
    md = report.markdown(_report_doc(rows))
    assert "No case was run twice" in md and "| softmax | float32 | 2 | 1 / 0 / 1 |" in md


def test_lora_over_base_gemm_in_the_decision():
    from loraops.bench import report

    gemm_args = {"x": [16, 1024], "m": 16, "k": 1024, "n": 1024}
    rows = [_timed(i, us, label="matmul", shape="[16,1024]@[1024,1024].T", args=gemm_args,
                   suite="lora") for i, us in (("vendor", 10.0), ("custom", 12.0), ("torch", 11.0))]
    for r_, us in ((8, 12.5), (64, 15.0)):
        args = dict(gemm_args, r=r_, scale=2.0)
        rows += [_timed(i, t, label="lora_forward", shape=f"x[16,1024] N=1024 r={r_}",
                        args=args, suite="lora")
                 for i, t in (("vendor", us), ("custom", us + 1), ("torch", 2 * us))]
    md = report.markdown(_report_doc(rows))
    assert "### LoRA / base GEMM" in md
    assert "| lora | 16 | 1024 | 1024 | float32 | 1.25 (2.27) | 1.50 (2.73) |" in md
    assert "the adapter costs most at M=16, K=1024, r=64 (1.50)" in md
    assert "**LoRA forward.**" in md and "**GEMM (matmul).**" in md


def test_mlx_probe():
    from loraops.bench import environment

    def missing():
        raise ImportError("No module named 'mlx'")

    assert environment.mlx_info(missing) == {"available": False, "version": None,
                                             "note": "not importable on this machine"}
    cuda_mx = types.SimpleNamespace(__version__="9.9", cuda=types.SimpleNamespace(
        is_available=lambda: True))
    assert environment.mlx_info(lambda: cuda_mx)["available"] is True
    cpu_mx = types.SimpleNamespace(__version__="9.9", cuda=types.SimpleNamespace(
        is_available=lambda: False))
    info = environment.mlx_info(lambda: cpu_mx)
    assert info["available"] is False and "without a usable CUDA device" in info["note"]


def test_compare_warns_when_rotation_differs():
    from loraops.bench import compare

    old, new = _synthetic_pair()
    new["results"][0]["rotated"] = True
    text = compare.text(compare.compare(old, new), old, new)
    assert "rotated the inputs" in text
    old, new = _synthetic_pair()
    assert "rotated" not in compare.text(compare.compare(old, new), old, new)


@pytest.mark.torch
def test_real_torch_compile_on_cpu(tmp_path):
    """The real torch.compile on the CPU: a row either timed or failed with the reason."""
    doc = run_bench(Options(suite="seed", device="cpu", out=str(tmp_path), quick=True,
                            match="softmax [4,16,1024]", torch_compile=True),
                    out=open(tmp_path / "o", "w"), err=open(tmp_path / "e", "w"))
    (row,) = [r for r in doc["results"] if r["impl"] == "torch.compile"]
    assert row["status"] == "ok" or row["note"].startswith("torch.compile failed"), row
    if row["status"] == "ok":
        assert row["compile_s"] > 0 and row["checked_against"] == "reference"
        assert not row["note"].startswith("MISMATCH")


# ---- --emit-cases and the C++ bench (loraops_bench, bench/bench_cases.cpp) ----------------------


def test_emit_cases_round_trip(tmp_path, capsys):
    from loraops.bench import cases_file, select_cases

    for device in ("cpu", "cuda"):  # cuda needs no GPU: it only writes the CUDA shapes
        path = tmp_path / f"{device}.txt"
        out = tmp_path / "never-written"
        assert loraops.cli.main(["bench", "--emit-cases", str(path), "--suite", "all",
                                 "--device", device, "--out", str(out)]) == 0
        assert not out.exists()  # nothing ran
        lines = path.read_text().splitlines()
        assert lines[0] == f"# loraops-cases/1 suite=all device={device} match="
        for line in lines[1:]:  # every key on every line, in order, each a single token
            assert [t.split("=", 1)[0] for t in line.split()] == list(cases_file.KEYS), line
        head, cases = cases_file.read(path)
        assert head == {"suite": "all", "device": device, "match": ""}
        assert cases == select_cases("all", device) and len(cases) == len(lines) - 1
    assert "wrote" in capsys.readouterr().err
    lora = [line for line in lines if "op=lora_forward" in line][0]
    assert " scale=2 dim=-1 eps=0" in lora and " kind= " in lora
    fields = cases_file.parse_line([line for line in lines if "op=rms_norm" in line][0])
    assert float(fields["eps"]) == frameworks.RMS_EPS and fields["scale"] == "0"
    fields = cases_file.parse_line([line for line in lines if "op=activation" in line][0])
    assert fields["kind"] in ("silu", "gelu_tanh")

    # --match (with its spaces) selects as a run does and survives the header.
    path = tmp_path / "m.txt"
    assert loraops.cli.main(["bench", "--emit-cases", str(path), "--device", "cpu",
                             "--match", "softmax [4,16"]) == 0
    head, cases = cases_file.read(path)
    assert head["match"] == "softmax [4,16" and [c.op for c in cases] == ["softmax"]
    assert loraops.cli.main(["bench", "--emit-cases", str(path), "--compare", "x.json"]) == 2
    assert "--emit-cases" in capsys.readouterr().err


def _bench_binary():
    """loraops_bench: $LORAOPS_BENCH_BIN, or the newest build/*/loraops_bench of this checkout."""
    import os
    from pathlib import Path

    if os.environ.get("LORAOPS_BENCH_BIN"):
        return os.environ["LORAOPS_BENCH_BIN"]
    root = Path(__file__).resolve().parents[2]
    found = [p for p in root.glob("build/*/loraops_bench") if os.access(p, os.X_OK)]
    found += [p for p in root.glob("build/loraops_bench") if os.access(p, os.X_OK)]
    if not found:
        pytest.skip("no loraops_bench built (cmake with -DLORAOPS_BUILD_TESTS=ON; or set "
                    "LORAOPS_BENCH_BIN)")
    return str(max(found, key=lambda p: p.stat().st_mtime))


def _run_cpp(args):
    import subprocess

    return subprocess.run([_bench_binary()] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=300)


def _cpp_cases():
    """One case of each op family, the formulas' every branch: a seed LoRA forward, a row op of
    each parameter count, an activation, and matmul and lora_backward from the lora suite."""
    seed = suites.cases("seed", "cpu")
    lora = suites.cases("lora", "cpu")
    pick = [c for c in seed if c.op == "lora_forward" and c.k == 1024 and c.r == 16]
    pick += [c for c in seed if c.is_row_op]
    pick += [suites.Case("rowwise", "activation", "bfloat16", (8, 256), kind="gelu_tanh")]
    pick += [c for c in lora if c.op == "matmul"][:1] + [c for c in lora if c.op == "lora_backward"]
    # attention: causal with Sq == Sk and Sq < Sk (the visible-pairs sum), GQA decode
    pick += [suites.Case("attention", "attention", "float32", (1, 4, 64, 32), sk=64, hkv=2,
                         causal=True),
             suites.Case("attention", "attention", "float32", (1, 2, 40, 32), sk=70, hkv=1,
                         causal=True),
             suites.Case("attention", "attention", "float32", (1, 4, 1, 32), sk=300, hkv=2)]
    return pick


def test_cpp_bench_rows_use_the_python_formulas(tmp_path):
    import math

    from loraops.bench import cases_file

    cases = _cpp_cases()
    path, out = tmp_path / "cases.txt", tmp_path / "cpp.json"
    cases_file.write(path, cases, "seed", "cpu")
    p = _run_cpp([path, "--device", "cpu", "--repeats", "3", "--out", out])
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0].split()[:4] == ["op", "shape", "dtype", "impl"]
    doc = json.loads(out.read_text())
    assert doc["schema"] == "loraops-bench/1" and doc["source"] == "cpp"
    assert doc["device"]["type"] == "cpu" and doc["impls"] == list(run.IMPLS)
    assert len(doc["results"]) == len(cases) * len(run.IMPLS)
    for case, rows in zip(cases, (doc["results"][i:i + 4] for i in range(0, 4 * len(cases), 4))):
        for impl, row in zip(run.IMPLS, rows):
            want = run._row(case, impl, "cpu")
            for key in ("suite", "op", "label", "shape", "args", "dtype", "impl", "unit",
                        "bytes", "flops"):
                assert row[key] == want[key], (key, row[key], want[key])
            assert row["source"] == "cpp"
            exists = loraops.has_impl(case.op, "cpu", impl, case.dtype)
            assert (row["status"] != "absent") == exists, row
            if row["status"] != "ok":
                assert row["note"] and row["us_median"] is None, row
                continue
            assert row["us_min"] <= row["us_q1"] <= row["us_median"] <= row["us_q3"] \
                <= row["us_max"]
            per_s = 1e6 / row["us_median"]
            rate = (case.bytes() / 1e9 if row["unit"] == "GB/s" else case.flops() / 1e9) * per_s
            assert math.isclose(row["value"], rate, rel_tol=1e-9)
            if case.is_decode:
                assert math.isclose(row["weight_gbps"], case.weight_bytes() * per_s / 1e9,
                                    rel_tol=1e-9)
            if row["checked_against"]:  # checked against the case's first output, and right
                assert not row["note"].startswith("MISMATCH"), row
    # The reference ran for every case (all small): every other row was checked against it.
    assert all(r["checked_against"] == "reference" for r in doc["results"]
               if r["status"] == "ok" and r["impl"] != "reference")


def test_cpp_results_read_by_compare(tmp_path, capsys):
    """A C++ run and a Python run of the same emitted cases: --compare matches every row."""
    cases = str(tmp_path / "cases.txt")
    assert loraops.cli.main(["bench", "--emit-cases", cases, "--device", "cpu",
                             "--match", "rms_norm"]) == 0
    p = _run_cpp([cases, "--repeats", "3", "--out", tmp_path / "cpp.json"])
    assert p.returncode == 0, p.stderr
    assert loraops.cli.main(["bench", "--device", "cpu", "--quick", "--match", "rms_norm",
                             "--out", str(tmp_path / "py")]) == 0
    capsys.readouterr()
    py = _load(tmp_path / "py")
    cpp = json.loads((tmp_path / "cpp.json").read_text())
    assert cpp["suite"] == "seed" and cpp["options"]["match"] == "rms_norm"
    loraops_impls = {(r["shape"], r["impl"]) for r in py["results"] if r["impl"] in run.IMPLS}
    assert {(r["shape"], r["impl"]) for r in cpp["results"]} == loraops_impls
    assert loraops.cli.main(["bench", "--compare", str(tmp_path / "py" / "results.json"),
                             "--against", str(tmp_path / "cpp.json")]) == 0
    text = capsys.readouterr().out
    # every loraops row matched; the Python run's framework rows (PyTorch, where importable) have
    # no C++ counterpart and show as removed
    assert " 0 added, " in text, text
    removed = [line.split() for line in text.splitlines() if line.lstrip().startswith("removed")]
    assert all(cols[4] not in run.IMPLS for cols in removed), text


def test_cpp_option_times_the_same_cases_from_cpp(tmp_path, capsys):
    """--cpp BINARY: the run's cases again from C++, in results.json's "cpp" and report.md; a
    binary that cannot run is an error entry, not a lost run."""
    out = tmp_path / "run"
    assert loraops.cli.main(["bench", "--device", "cpu", "--quick", "--match", "rms_norm",
                             "--out", str(out), "--cpp", _bench_binary()]) == 0
    doc = _load(out)
    cpp = doc["cpp"]
    assert cpp["error"] is None and cpp["binary"] == _bench_binary()
    mine = {(r["shape"], r["impl"]) for r in doc["results"] if r["impl"] in run.IMPLS}
    assert {(r["shape"], r["impl"]) for r in cpp["results"]} == mine
    assert all(r["source"] == "cpp" for r in cpp["results"])
    assert {r["status"] for r in cpp["results"]} == {"ok", "absent"}  # the CPU has no vendor
    text = (out / "report.md").read_text()
    assert "## From C++ (loraops_bench)" in text and "Host cost of the Python call" in text
    custom = next(r for r in cpp["results"] if r["impl"] == "custom")
    assert "| custom | " in text and fmt_us(custom["us_median"]) in text

    bad = tmp_path / "bad"
    assert loraops.cli.main(["bench", "--device", "cpu", "--quick", "--match", "rms_norm",
                             "--out", str(bad), "--cpp", str(tmp_path / "nope")]) == 0
    doc = _load(bad)
    assert "did not run" in doc["cpp"]["error"] and doc["cpp"]["results"] == []
    assert "The C++ run did not complete" in (bad / "report.md").read_text()
    assert "--cpp:" in capsys.readouterr().err
    assert _load(bad)["results"]  # the Python rows are all there


def test_cpp_bench_errors_and_no_gpu(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("suite=seed op=softmax dtype=float32 x=4,8\n")
    p = _run_cpp([bad])
    assert p.returncode == 2 and "not a cases file" in p.stderr
    bad.write_text("# loraops-cases/1 suite=seed device=cpu match=\n"
                   "suite=seed op=nope dtype=float32 x=4,8\n")
    p = _run_cpp([bad])
    assert p.returncode == 2 and ":2: unknown op 'nope'" in p.stderr
    torch = import_torch()
    if torch is not None and torch.cuda.is_available():
        return
    ok = tmp_path / "ok.txt"
    ok.write_text("# loraops-cases/1 suite=seed device=cuda match=\n"
                  "suite=seed op=softmax dtype=float32 x=4,8 n=0 r=0 kind= scale=0 dim=-1 eps=0\n")
    p = _run_cpp([ok, "--out", tmp_path / "r.json"])  # the file's device: cuda; there is none
    assert p.returncode == 0 and "CUDA cases are skipped" in p.stdout
    assert not (tmp_path / "r.json").exists()


def test_graph_rows_script_prints_only_rows_with_a_graph_time(tmp_path):
    """scripts/graph_rows.py (the device script's per-row graph figures) reads results.json."""
    script = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "graph_rows.py"
    if not script.exists():
        pytest.skip("not run from a source checkout")
    doc = {"results": [
        {"op": "lora_forward", "shape": "x[1,1,512] N=512 r=8", "dtype": "float32", "impl": "custom",
         "us_median": 19.0, "us_graph": 2.88},
        {"op": "softmax", "shape": "[4,16,1024]", "dtype": "float32", "impl": "vendor",
         "us_median": None, "us_graph": None},
        {"op": "rms_norm", "shape": "[4,16,1024]", "dtype": "float32", "impl": "torch",
         "us_median": None, "us_graph": 1.5},
    ]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    out = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0].endswith(": 2 rows")
    assert "lora_forward x[1,1,512] N=512 r=8 float32 custom" in out[1] and out[1].endswith("graph     2.88")
    assert "rms_norm" in out[2] and " - " in out[2].replace("eager", "") and out[2].endswith("graph     1.50")
