"""softmax, rms_norm, layer_norm, activation on numpy arrays: against fp64 numpy and against
impl="reference", over row lengths, dtypes, strided views and special values."""

import numpy as np
import pytest

import loraops
import numpy_ref as ref
from util import (DTYPES, VIEWS, assert_close, check_result, elementwise_tol, make_view,
                  np_dtype, randn, rng_for, skip_unless_impl)

ROW_LENGTHS = (1, 31, 33, 1023, 2049, 4099)
# The CPU has no vendor row ops (a BLAS has none); that absence is tested on its own below.
IMPLS = ("reference", "custom", "auto")
KINDS = ("relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu")


def run(op, impl, *args, **kw):
    return getattr(loraops, op)(*args, impl=impl, **kw)


def check(op, impl, dtype, want, args, kw=None, scale=None):
    """op(*args) under `impl` against the fp64 `want`, and against impl="reference"."""
    kw = kw or {}
    skip_unless_impl(op, impl, dtype)
    out = run(op, impl, *args, **kw)
    check_result(out, dtype, want.shape)
    tol = elementwise_tol(want, dtype, scale)
    assert_close(out, want, tol, f"{op} impl={impl} vs fp64 numpy")
    if impl != "reference":
        assert_close(out, run(op, "reference", *args, **kw), 2 * tol, f"{op} impl={impl} vs reference")
    return out


# ---- softmax ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", ROW_LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_softmax(impl, dtype, n):
    x = randn(rng_for("softmax", dtype, n), (3, n), dtype, scale=3.0)
    check("softmax", impl, dtype, ref.softmax(x), (x,))


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("impl", ("reference", "custom", "auto"))
def test_softmax_views(impl, view):
    x = make_view(rng_for("softmax-view", view), view, 5, 37, "float32", scale=2.0)
    check("softmax", impl, "float32", ref.softmax(x), (x,))


@pytest.mark.parametrize("dim", (0, 1, -1, -3))
@pytest.mark.parametrize("impl", ("reference", "custom"))
def test_softmax_dim(impl, dim):
    x = randn(rng_for("softmax-dim", dim), (4, 5, 33), "float32")[:, :, 1:]  # [4, 5, 32], strided
    check("softmax", impl, "float32", ref.softmax(x, dim), (x,), {"dim": dim})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ("reference", "custom", "auto"))
def test_softmax_special_values(impl, dtype):
    skip_unless_impl("softmax", impl, dtype)
    n = 40
    x = randn(rng_for("softmax-special"), (5, n), dtype).astype(np.float32)
    x[0, :] = -np.inf                      # all -inf: zeros, not NaN
    x[1, 3] = np.nan                       # NaN in: NaN out (the whole row)
    x[2, ::2] = -np.inf                    # partly -inf: those are 0, the rest a softmax
    x[3, :] = 7.0                          # constant row: uniform
    x[4, :] = -1e30 if dtype != "float16" else -6e4   # huge but finite: still a softmax
    x[4, 5] = 0.0
    x = x.astype(np_dtype(dtype))
    out = loraops.softmax(x, impl=impl)
    o = out.astype(np.float64)
    assert np.all(o[0] == 0.0), o[0]
    assert np.all(np.isnan(o[1])), o[1]
    assert np.all(o[2, ::2] == 0.0) and np.all(o[2, 1::2] > 0)
    assert_close(o[2:], ref.softmax(x[2:]), elementwise_tol(ref.softmax(x[2:]), dtype), "softmax special")
    assert np.all(o[3] == o[3, 0])


# ---- rms_norm -----------------------------------------------------------------------------------

@pytest.mark.parametrize("n", ROW_LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_rms_norm(impl, dtype, n):
    rng = rng_for("rms", dtype, n)
    x = randn(rng, (3, n), dtype, scale=2.0, offset=0.5)
    w = randn(rng, (n,), dtype)
    check("rms_norm", impl, dtype, ref.rms_norm(x, w, 1e-6), (x, w))


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("impl", ("reference", "custom", "auto"))
def test_rms_norm_views(impl, view):
    rng = rng_for("rms-view", view)
    x = make_view(rng, view, 6, 45, "float32")
    w = randn(rng, (90,), "float32")[::-2]  # a strided weight too
    check("rms_norm", impl, "float32", ref.rms_norm(x, w, 1e-5), (x, w), {"eps": 1e-5})


@pytest.mark.parametrize("impl", ("reference", "custom"))
def test_rms_norm_no_weight_eps(impl):
    x = randn(rng_for("rms-now"), (4, 3, 65), "float32", scale=1e-3)  # eps matters at this scale
    check("rms_norm", impl, "float32", ref.rms_norm(x, None, 1e-4), (x,), {"eps": 1e-4})
    z = np.zeros((2, 8), np.float32)  # all zeros: 0 * rsqrt(eps) = 0, not NaN
    assert np.all(loraops.rms_norm(z, impl=impl) == 0.0)


# ---- layer_norm ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", ROW_LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_layer_norm(impl, dtype, n):
    rng = rng_for("ln", dtype, n)
    x = randn(rng, (3, n), dtype, scale=2.0, offset=1.0)
    w = randn(rng, (n,), dtype)
    b = randn(rng, (n,), dtype)
    # The result's error is relative to the normalised values' scale (|w| + |b|), not to x's.
    want = ref.layer_norm(x, w, b, 1e-5)
    check("layer_norm", impl, dtype, want, (x, w, b))


# Not bcast_cols: a constant row has zero variance, where layer norm is ill-conditioned (one ulp
# of difference between x and its mean is amplified by rsqrt(eps)).
@pytest.mark.parametrize("view", [v for v in VIEWS if v != "bcast_cols"])
@pytest.mark.parametrize("impl", ("reference", "custom", "auto"))
def test_layer_norm_views(impl, view):
    rng = rng_for("ln-view", view)
    x = make_view(rng, view, 6, 45, "float32", offset=-2.0)
    w = randn(rng, (45, 2), "float32")[:, 1]
    b = randn(rng, (45,), "float32")
    check("layer_norm", impl, "float32", ref.layer_norm(x, w, b, 1e-5), (x, w, b))


@pytest.mark.parametrize("impl", ("reference", "custom"))
def test_layer_norm_stable_variance(impl):
    """A large mean and a small spread: E[x^2]-E[x]^2 in fp32 would lose every digit."""
    x = randn(rng_for("ln-stable"), (4, 2049), "float32", scale=1.0, offset=1e4)
    check("layer_norm", impl, "float32", ref.layer_norm(x, None, None, 1e-5), (x,))


@pytest.mark.parametrize("impl", ("reference", "custom"))
def test_layer_norm_optional_affine(impl):
    rng = rng_for("ln-opt")
    x = randn(rng, (2, 3, 33), "float32")
    w = randn(rng, (33,), "float32")
    b = randn(rng, (33,), "float32")
    check("layer_norm", impl, "float32", ref.layer_norm(x, None, b, 1e-3), (x,), {"bias": b, "eps": 1e-3})
    check("layer_norm", impl, "float32", ref.layer_norm(x, w, None, 1e-5), (x, w))


# ---- activation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", ROW_LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("impl", ("reference", "custom", "auto"))
def test_activation(impl, kind, dtype, n):
    x = randn(rng_for("act", kind, dtype, n), (3, n), dtype, scale=3.0)
    check("activation", impl, dtype, ref.activation(x, kind), (x, kind))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("view", VIEWS)
def test_activation_views(view, kind):
    x = make_view(rng_for("act-view", view, kind), view, 4, 19, "float32", scale=2.0)
    check("activation", "custom", "float32", ref.activation(x, kind), (x, kind))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("impl", ("reference", "custom"))
def test_activation_large_values(impl, kind, dtype):
    """Saturating ranges: no overflow to inf/NaN on the way (exp(-x) for large |x|)."""
    big = {"float32": 1e4, "float16": 6e4, "bfloat16": 1e30}[dtype]
    x = np.array([-big, -100.0, -30.0, -10.0, -1e-3, 0.0, 1e-3, 10.0, 30.0, 100.0, big])
    x = x.astype(np_dtype(dtype))
    out = check("activation", impl, dtype, ref.activation(x, kind), (x, kind), scale=1.0)
    assert np.all(np.isfinite(out.astype(np.float64)))


@pytest.mark.parametrize("impl", ("reference", "custom"))
def test_activation_any_rank(impl):
    for shape in [(), (7,), (2, 3, 4), (1, 2, 1, 3, 1, 2, 1, 2)]:
        x = randn(rng_for("act-rank", shape), shape, "float32")
        check("activation", impl, "float32", ref.activation(x, "silu"), (x, "silu"))


# ---- shared: empty tensors, bfloat16 round trip ---------------------------------------------------

@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (0,), (2, 0, 4)])
@pytest.mark.parametrize("op", ("softmax", "rms_norm", "layer_norm", "activation"))
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty(op, dtype, shape):
    x = np.zeros(shape, np_dtype(dtype))
    args = (x, "relu") if op == "activation" else (x,)
    for impl in ("reference", "custom", "auto"):
        out = run(op, impl, *args)
        check_result(out, dtype, shape)


@pytest.mark.parametrize("op", ("softmax", "rms_norm", "layer_norm", "activation"))
def test_vendor_row_ops_do_not_exist_on_cpu(op):
    x = randn(rng_for("vendor", op), (2, 8), "float32")
    args = (x, "gelu") if op == "activation" else (x,)
    with pytest.raises(loraops.UnsupportedError, match="vendor on cpu: a BLAS has no such operation") as e:
        run(op, "vendor", *args)
    assert e.value.argument == "impl"
    # also for an empty input: never a silent substitution
    with pytest.raises(loraops.UnsupportedError):
        run(op, "vendor", np.zeros((0, 8), np.float32), *args[1:])
    assert not loraops.has_impl(op, "cpu", "vendor")
