"""attention on numpy arrays: MHA/GQA/MQA, causal (bottom-right aligned), fully masked rows,
the [B, S, H, D] layout as a strided view, scale, and the zero sizes."""

import math

import numpy as np
import pytest

import loraops
import numpy_ref as ref
from util import (DTYPES, IMPLS, assert_close, check_result, dot_tol, np_dtype, randn, rng_for,
                  skip_unless_impl)

# (B, Hq, Hkv, Sq, Sk, D)
SHAPES = ((1, 1, 1, 1, 1, 1), (2, 4, 2, 7, 9, 16), (1, 4, 1, 5, 5, 8), (1, 2, 2, 33, 31, 32),
          (1, 3, 3, 1, 65, 64), (1, 2, 1, 40, 17, 24))


def ids(s):
    return "B{}Hq{}Hkv{}Sq{}Sk{}D{}".format(*s)


def check(impl, dtype, q, k, v, causal=False, scale=None):
    skip_unless_impl("attention", impl, dtype)
    out = loraops.attention(q, k, v, causal=causal, scale=scale, impl=impl)
    want, mag = ref.attention(q, k, v, causal, scale)
    check_result(out, dtype, want.shape)
    d, sk = q.shape[-1], k.shape[-2]
    s = scale if scale is not None else 1.0 / math.sqrt(max(d, 1))
    # Errors of the scores (a sum over D) become relative errors of the probabilities.
    qn = np.abs(q.astype(np.float64)).max(initial=0.0)
    kn = np.abs(k.astype(np.float64)).max(initial=0.0)
    score_err = 1e-5 * math.sqrt(max(d, 1)) * d * qn * kn * abs(s)
    tol = dot_tol(want, mag * (1.0 + 2.0 * score_err), sk, dtype, rounded_terms=mag)
    tol = tol + 2.0 * score_err * mag
    assert_close(out, want, tol, f"attention impl={impl} causal={causal} vs fp64 numpy")
    if impl != "reference":
        assert_close(out, loraops.attention(q, k, v, causal=causal, scale=scale, impl="reference"),
                     2 * tol, f"attention impl={impl} vs reference")
    return out, want


def qkv(rng, shape, dtype):
    b, hq, hkv, sq, sk, d = shape
    return (randn(rng, (b, hq, sq, d), dtype), randn(rng, (b, hkv, sk, d), dtype),
            randn(rng, (b, hkv, sk, d), dtype))


@pytest.mark.parametrize("causal", (False, True), ids=("full", "causal"))
@pytest.mark.parametrize("shape", SHAPES, ids=ids)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_attention(impl, dtype, shape, causal):
    check(impl, dtype, *qkv(rng_for("att", dtype, shape, causal), shape, dtype), causal=causal)


@pytest.mark.parametrize("impl", IMPLS)
def test_attention_bshd_layout_and_scale(impl):
    """q, k, v as [B, S, H, D] buffers seen as [B, H, S, D] (what a model's projections give)."""
    rng = rng_for("att-bshd")
    b, hq, hkv, sq, sk, d = 2, 4, 2, 11, 13, 16
    q = randn(rng, (b, sq, hq, d), "float32").transpose(0, 2, 1, 3)
    kv = randn(rng, (b, sk, 2, hkv, d), "float32")  # a fused kv buffer
    k, v = kv[:, :, 0].transpose(0, 2, 1, 3), kv[:, :, 1].transpose(0, 2, 1, 3)
    check(impl, "float32", q, k, v, causal=True, scale=0.3)
    check(impl, "float32", q[:, :, ::-1], k, v, causal=False, scale=None)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_attention_causal_bottom_right_and_fully_masked(impl, dtype):
    """Sq > Sk with causal: query i sees keys j <= i + Sk - Sq, so the first Sq - Sk queries see
    none and give exactly 0."""
    rng = rng_for("att-mask", dtype)
    sq, sk = 9, 4
    q, k, v = qkv(rng, (1, 2, 1, sq, sk, 8), dtype)
    out, _ = check(impl, dtype, q, k, v, causal=True)
    assert np.all(out[:, :, : sq - sk].astype(np.float64) == 0.0)
    # Sq == 1 < Sk (decode): the last query sees every key, causal or not.
    q1 = q[:, :, -1:]
    a, _ = check(impl, dtype, q1, k, v, causal=True)
    b, _ = check(impl, dtype, q1, k, v, causal=False)
    assert np.array_equal(a.astype(np.float64), b.astype(np.float64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_attention_empty(impl, dtype):
    skip_unless_impl("attention", impl, dtype)
    dt = np_dtype(dtype)
    rng = rng_for("att-e", dtype)
    # Sk = 0: every query sees nothing: zeros (a non-empty output)
    out = loraops.attention(randn(rng, (1, 2, 3, 4), dtype), np.zeros((1, 1, 0, 4), dt),
                            np.zeros((1, 1, 0, 4), dt), impl=impl)
    check_result(out, dtype, (1, 2, 3, 4))
    assert np.all(out.astype(np.float64) == 0.0)
    for qs, ks in [((1, 2, 0, 4), (1, 1, 5, 4)), ((0, 2, 3, 4), (0, 1, 5, 4)),
                   ((1, 2, 3, 0), (1, 1, 5, 0)), ((1, 0, 3, 4), (1, 0, 5, 4))]:
        out = loraops.attention(np.zeros(qs, dt), np.zeros(ks, dt), np.zeros(ks, dt), causal=True,
                                impl=impl)
        check_result(out, dtype, qs)
