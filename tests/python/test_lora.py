"""lora_forward and lora_backward on numpy arrays: decode and prefill shapes, bias, ranks
including r = 0 and K = 0, leading dims, strided views."""

import numpy as np
import pytest

import loraops
import numpy_ref as ref
from util import (DTYPES, IMPLS, assert_close, check_result, dot_tol, np_dtype, randn, rng_for,
                  skip_unless_impl)

# (M, K, N, r): decode (M = 1), odd sizes, prefill-ish, and the zero cases of each dim.
SHAPES = ((1, 1, 1, 1), (1, 64, 48, 8), (17, 33, 31, 4), (40, 96, 80, 16), (23, 17, 9, 1),
          (5, 7, 6, 0), (4, 0, 6, 3), (0, 8, 6, 2))


def ids(s):
    return "M{}K{}N{}r{}".format(*s)


def weights(rng, k, n, r, dtype, bias):
    w = randn(rng, (n, k), dtype)
    a = randn(rng, (r, k), dtype)
    b = randn(rng, (n, r), dtype)
    bb = randn(rng, (n,), dtype) if bias else None
    return w, a, b, bb


def check_forward(impl, dtype, x, w, a, b, scale, bias):
    skip_unless_impl("lora_forward", impl, dtype)
    out = loraops.lora_forward(x, w, a, b, scale, bias, impl=impl)
    want, _ = ref.lora_forward(x, w, a, b, scale, bias)
    check_result(out, dtype, want.shape)
    bound, lora_bound = ref.lora_forward(x, w, a, b, scale, bias, absolute=True)
    tol = dot_tol(want, bound, x.shape[-1] + a.shape[0], dtype, rounded_terms=lora_bound)
    assert_close(out, want, tol, f"lora_forward impl={impl} vs fp64 numpy")
    if impl != "reference":
        assert_close(out, loraops.lora_forward(x, w, a, b, scale, bias, impl="reference"),
                     2 * tol, f"lora_forward impl={impl} vs reference")


@pytest.mark.parametrize("bias", (False, True), ids=("nobias", "bias"))
@pytest.mark.parametrize("shape", SHAPES, ids=ids)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_lora_forward(impl, dtype, shape, bias):
    m, k, n, r = shape
    rng = rng_for("lf", dtype, shape, bias)
    x = randn(rng, (m, k), dtype)
    w, a, b, bb = weights(rng, k, n, r, dtype, bias)
    check_forward(impl, dtype, x, w, a, b, 0.5, bb)


@pytest.mark.parametrize("impl", IMPLS)
def test_lora_forward_views_and_leading_dims(impl):
    rng = rng_for("lf-v")
    k, n, r = 24, 20, 4
    x = randn(rng, (3, 2 * k, 5), "float32").transpose(0, 2, 1)[:, :, ::2]  # [3, 5, K], strided
    w = randn(rng, (k, n), "float32").T  # weight given transposed in memory
    a = randn(rng, (r, 2 * k), "float32")[:, 1::2]
    b = randn(rng, (n, r), "float32")[::-1]
    bias = randn(rng, (2 * n,), "float32")[::2]
    check_forward(impl, "float32", x, w, a, b, -1.25, bias)
    check_forward(impl, "float32", randn(rng, (k,), "float32"), w, a, b, 2.0, None)  # 1-D x
    check_forward(impl, "float32", x, w, a, b, 0.0, bias)  # scale 0: the base layer only


def check_backward(impl, dtype, g, x, w, a, b, scale, xa=None):
    skip_unless_impl("lora_backward", impl, dtype)
    outs = loraops.lora_backward(g, x, w, a, b, scale, xa=xa, impl=impl)
    assert isinstance(outs, tuple) and len(outs) == 3
    wants = ref.lora_backward(g, x, w, a, b, scale)
    bounds = ref.lora_backward(g, x, w, a, b, scale, absolute=True)
    m = int(np.prod(x.shape[:-1]))
    k, n, r = x.shape[-1], w.shape[0], a.shape[0]
    # Sum lengths: grad_x sums over N (and r), grad_a over M (and N), grad_b over M (and K).
    lengths = (n + r, m + n, m + k)
    # Intermediates an implementation may round: g@lora_b in grad_x/grad_a, x@lora_a.T in grad_b.
    g2 = np.abs(g.astype(np.float64)).reshape(m, n)
    x2 = np.abs(x.astype(np.float64)).reshape(m, k)
    gb = g2 @ np.abs(b.astype(np.float64))
    xa = x2 @ np.abs(a.astype(np.float64)).T
    rounded = (abs(scale) * (gb @ np.abs(a.astype(np.float64))).reshape(x.shape),
               abs(scale) * gb.T @ x2,
               abs(scale) * g2.T @ xa)
    refs = loraops.lora_backward(g, x, w, a, b, scale, impl="reference") if impl != "reference" else None
    for i, name in enumerate(("grad_x", "grad_a", "grad_b")):
        check_result(outs[i], dtype, wants[i].shape)
        tol = dot_tol(wants[i], bounds[i], lengths[i], dtype, rounded_terms=rounded[i])
        assert_close(outs[i], wants[i], tol, f"lora_backward {name} impl={impl} vs fp64 numpy")
        if refs is not None:
            assert_close(outs[i], refs[i], 2 * tol, f"lora_backward {name} impl={impl} vs reference")


@pytest.mark.parametrize("shape", SHAPES, ids=ids)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_lora_backward(impl, dtype, shape):
    m, k, n, r = shape
    rng = rng_for("lb", dtype, shape)
    x = randn(rng, (m, k), dtype)
    g = randn(rng, (m, n), dtype)
    w, a, b, _ = weights(rng, k, n, r, dtype, False)
    check_backward(impl, dtype, g, x, w, a, b, 0.75)
    # the forward's x@A.T handed to the backward: same result, within the same tolerance (which
    # already admits x@A.T rounded to the dtype)
    skip_unless_impl("lora_forward", impl, dtype)
    y, xa = loraops.lora_forward(x, w, a, b, 0.75, return_xa=True, impl=impl)
    check_result(xa, dtype, (m, r))
    want = x.astype(np.float64) @ a.astype(np.float64).T
    bound = np.abs(x.astype(np.float64)) @ np.abs(a.astype(np.float64)).T
    assert_close(xa, want, dot_tol(want, bound, k, dtype), f"xa impl={impl} vs fp64 numpy")
    assert_close(y, loraops.lora_forward(x, w, a, b, 0.75, impl=impl), 0, "y with return_xa")
    check_backward(impl, dtype, g, x, w, a, b, 0.75, xa=xa)
    check_backward(impl, dtype, g, x, w, a, b, 0.75, xa=np.ascontiguousarray(xa.T).T)  # strided


@pytest.mark.parametrize("impl", IMPLS)
def test_lora_backward_views_and_leading_dims(impl):
    rng = rng_for("lb-v")
    k, n, r = 18, 22, 6
    x = randn(rng, (2, 2 * k, 7), "float32").transpose(0, 2, 1)[:, :, ::2]  # [2, 7, K]
    g = randn(rng, (7, 2, n), "float32").transpose(1, 0, 2)  # [2, 7, N], leading dims swapped
    w = randn(rng, (k, n), "float32").T
    a = randn(rng, (r, k), "float32")[::-1, ::-1]
    b = randn(rng, (n, 2 * r), "float32")[:, ::2]
    check_backward(impl, "float32", g, x, w, a, b, -0.5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_lora_empty_cases_exact(impl, dtype):
    """The zero-size dims give exact results: K = 0 gives y = bias; M = 0 gives zero grads."""
    skip_unless_impl("lora_forward", impl, dtype)
    rng = rng_for("l-e", dtype)
    dt = np_dtype(dtype)
    bias = randn(rng, (6,), dtype)
    y = loraops.lora_forward(np.zeros((4, 0), dt), np.zeros((6, 0), dt), np.zeros((3, 0), dt),
                             randn(rng, (6, 3), dtype), 2.0, bias, impl=impl)
    check_result(y, dtype, (4, 6))
    assert np.array_equal(y.astype(np.float64), np.broadcast_to(bias.astype(np.float64), (4, 6)))
    y = loraops.lora_forward(np.zeros((0, 5), dt), randn(rng, (6, 5), dtype), randn(rng, (3, 5), dtype),
                             randn(rng, (6, 3), dtype), 2.0, bias, impl=impl)
    check_result(y, dtype, (0, 6))
    gx, ga, gb = loraops.lora_backward(np.zeros((0, 6), dt), np.zeros((0, 5), dt),
                                       randn(rng, (6, 5), dtype), randn(rng, (3, 5), dtype),
                                       randn(rng, (6, 3), dtype), 1.0, impl=impl)
    check_result(gx, dtype, (0, 5))
    check_result(ga, dtype, (3, 5))
    check_result(gb, dtype, (6, 3))
    assert np.all(ga.astype(np.float64) == 0.0) and np.all(gb.astype(np.float64) == 0.0)
