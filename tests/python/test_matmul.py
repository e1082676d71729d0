"""matmul on numpy arrays: shapes, transposes, alpha/beta/c, batches, strided views, K = 0."""

import numpy as np
import pytest

import loraops
import numpy_ref as ref
from util import (DTYPES, IMPLS, assert_close, check_result, dot_tol, np_dtype, randn, rng_for,
                  skip_unless_impl)

# (M, N, K): single elements, odd sizes around the vector widths, a few blocks' worth.
SHAPES = ((1, 1, 1), (1, 33, 17), (31, 33, 17), (33, 31, 65), (64, 96, 80), (5, 7, 130))


def check(impl, dtype, a, b, **kw):
    skip_unless_impl("matmul", impl, dtype)
    out = loraops.matmul(a, b, impl=impl, **kw)
    want = ref.matmul(a, b, **kw)
    check_result(out, dtype, want.shape)
    k = a.shape[-2] if kw.get("trans_a") else a.shape[-1]
    tol = dot_tol(want, ref.matmul(a, b, absolute=True, **kw), k, dtype)
    assert_close(out, want, tol, f"matmul impl={impl} vs fp64 numpy")
    if impl != "reference":
        assert_close(out, loraops.matmul(a, b, impl="reference", **kw), 2 * tol,
                     f"matmul impl={impl} vs reference")
    return out


@pytest.mark.parametrize("mnk", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_matmul(impl, dtype, mnk):
    m, n, k = mnk
    rng = rng_for("mm", dtype, mnk)
    check(impl, dtype, randn(rng, (m, k), dtype), randn(rng, (k, n), dtype))


@pytest.mark.parametrize("trans_b", (False, True))
@pytest.mark.parametrize("trans_a", (False, True))
@pytest.mark.parametrize("impl", IMPLS)
def test_matmul_transposes(impl, trans_a, trans_b):
    m, n, k = 19, 23, 37
    rng = rng_for("mm-t", trans_a, trans_b)
    a = randn(rng, (k, m) if trans_a else (m, k), "float32")
    b = randn(rng, (n, k) if trans_b else (k, n), "float32")
    check(impl, "float32", a, b, trans_a=trans_a, trans_b=trans_b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_matmul_alpha_beta_c(impl, dtype):
    rng = rng_for("mm-c", dtype)
    a, b = randn(rng, (20, 30), dtype), randn(rng, (30, 25), dtype)
    c = randn(rng, (20, 50), dtype)[:, ::2]  # a strided c
    check(impl, dtype, a, b, alpha=0.5, beta=-2.0, c=c)
    check(impl, dtype, a, b, alpha=-1.5, beta=0.0, c=c)  # beta 0: c is not read
    nan_c = np.full((20, 25), np.nan, np_dtype(dtype))
    out = check(impl, dtype, a, b, beta=0.0, c=nan_c)  # not read means not read: no NaN
    assert np.all(np.isfinite(out.astype(np.float64)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_matmul_batched(impl, dtype):
    rng = rng_for("mm-b", dtype)
    a = randn(rng, (3, 17, 24), dtype)
    b = randn(rng, (24, 3, 19), dtype).transpose(1, 0, 2)  # batch not outermost in memory
    c = randn(rng, (3, 17, 19), dtype)
    check(impl, dtype, a, b)
    check(impl, dtype, a, b, alpha=2.0, beta=0.5, c=c)
    check(impl, dtype, np.ascontiguousarray(a.transpose(0, 2, 1)), b, trans_a=True)
    check(impl, dtype, a, b[:, :, ::-1], trans_b=False)


@pytest.mark.parametrize("view", ("transposed", "cols_step2", "neg", "bcast"))
@pytest.mark.parametrize("impl", IMPLS)
def test_matmul_views(impl, view):
    rng = rng_for("mm-v", view)
    m, n, k = 13, 21, 29
    if view == "transposed":
        a, b = randn(rng, (k, m), "float32").T, randn(rng, (n, k), "float32").T
    elif view == "cols_step2":
        a, b = randn(rng, (m, 2 * k), "float32")[:, ::2], randn(rng, (2 * k, n), "float32")[::2]
    elif view == "neg":
        a, b = randn(rng, (m, k), "float32")[::-1], randn(rng, (k, n), "float32")[:, ::-1]
    else:
        a = np.broadcast_to(randn(rng, (k,), "float32"), (m, k))
        b = np.broadcast_to(randn(rng, (k, 1), "float32"), (k, n))
    check(impl, "float32", a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_matmul_empty(impl, dtype):
    skip_unless_impl("matmul", impl, dtype)
    rng = rng_for("mm-e", dtype)
    dt = np_dtype(dtype)
    # K = 0: a non-empty output of zeros, or beta * c
    out = loraops.matmul(np.zeros((4, 0), dt), np.zeros((0, 5), dt), impl=impl)
    check_result(out, dtype, (4, 5))
    assert np.all(out.astype(np.float64) == 0.0)
    c = randn(rng, (4, 5), dtype)
    out = loraops.matmul(np.zeros((4, 0), dt), np.zeros((0, 5), dt), beta=2.0, c=c, impl=impl)
    assert_close(out, 2.0 * c.astype(np.float64), 0.0, "K=0: beta*c")
    out = loraops.matmul(np.zeros((2, 0, 3), dt), np.zeros((2, 5, 0), dt), trans_a=True,
                         trans_b=True, impl=impl)
    check_result(out, dtype, (2, 3, 5))
    assert np.all(out.astype(np.float64) == 0.0)
    # M = 0, N = 0, batch = 0: empty outputs
    for a, b, shape in [((0, 3), (3, 5), (0, 5)), ((4, 3), (3, 0), (4, 0)),
                        ((0, 4, 3), (0, 3, 5), (0, 4, 5))]:
        out = loraops.matmul(np.zeros(a, dt), np.zeros(b, dt), impl=impl)
        check_result(out, dtype, shape)
