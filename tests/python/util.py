"""Shared helpers of the Python tests: dtypes, random inputs, strided views, tolerances."""

import zlib

import numpy as np
import pytest

import loraops

try:
    import ml_dtypes
except ImportError:  # the bfloat16 cases skip
    ml_dtypes = None

DTYPES = ("float32", "float16", "bfloat16")
# Machine epsilon (one ulp at 1.0) and the smallest positive (subnormal) value of each dtype.
EPS = {"float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}
TINY = {"float32": 2.0**-149, "float16": 2.0**-24, "bfloat16": 2.0**-133}
# The contract's fp32 accuracy: ~1e-5 relative (matrix ops: scaled by sqrt(K)).
F32_RTOL = 1e-5
# The implementations every CPU op is tested under; "vendor" only where it exists.
IMPLS = ("reference", "custom", "vendor", "auto")


def np_dtype(name):
    if name == "bfloat16":
        if ml_dtypes is None:
            pytest.skip("ml_dtypes is not installed (numpy bfloat16)")
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def dtype_name(a):
    return np.dtype(a.dtype).name


def skip_unless_impl(op, impl, dtype, device="cpu"):
    """Skips (after checking it raises UnsupportedError) when `impl` of `op` does not exist."""
    if not loraops.has_impl(op, device, impl, dtype):
        pytest.skip(f"no {impl} {op} for {dtype} on {device} in this build")


def rng_for(*key):
    """A generator seeded from the test's parameters, so every case is reproducible."""
    return np.random.default_rng(zlib.crc32("/".join(str(k) for k in key).encode()))


def randn(rng, shape, dtype, scale=1.0, offset=0.0):
    return (rng.standard_normal(shape) * scale + offset).astype(np_dtype(dtype))


def f64(a):
    return np.asarray(a).astype(np.float64)


def assert_close(out, ref, allowed, what=""):
    """|out - ref| <= allowed elementwise (NaN must match NaN; infinities must match)."""
    out = f64(out)
    ref = np.broadcast_to(np.asarray(ref, dtype=np.float64), out.shape)
    allowed = np.broadcast_to(np.asarray(allowed, dtype=np.float64), out.shape)
    nan_ref = np.isnan(ref)
    assert np.array_equal(np.isnan(out), nan_ref), f"{what}: NaN where the reference has none, or vice versa"
    with np.errstate(invalid="ignore"):
        err = np.where(nan_ref | (out == ref), 0.0, np.abs(out - ref))
    err = np.where(np.isnan(err), np.inf, err)
    bad = err > allowed
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err / np.maximum(allowed, 1e-300), 0)), out.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {out.size} elements off; worst at {tuple(int(j) for j in i)}: "
            f"got {out[i]!r}, want {ref[i]!r}, allowed error {allowed[i]:.3g}, error {err[i]:.3g}")


def elementwise_tol(ref, dtype, scale=None):
    """Allowed error of an op computed in fp32 (or better) from exact inputs and rounded once to
    `dtype`: a ulp of the result (two roundings' worth), plus fp32 noise relative to the data's
    scale, plus the dtype's smallest step (results in the subnormal range)."""
    ref = np.abs(np.asarray(ref, dtype=np.float64))
    finite = ref[np.isfinite(ref)]
    if scale is None:
        scale = finite.max() if finite.size else 0.0
    rtol = F32_RTOL if dtype == "float32" else EPS[dtype]
    return rtol * ref + F32_RTOL * scale + TINY[dtype]


def dot_tol(ref, bound, k, dtype, rounded_terms=0.0):
    """Allowed error of a sum of k products: `bound` is the same sum over absolute values;
    fp32 accumulation error grows like sqrt(k). `rounded_terms` is the absolute-value bound of
    intermediates an implementation may legitimately round to a half dtype (LoRA's x@A.T,
    attention's probabilities)."""
    ref = np.abs(np.asarray(ref, dtype=np.float64))
    rtol = F32_RTOL if dtype == "float32" else EPS[dtype]
    acc = F32_RTOL * np.sqrt(max(k, 1))
    half = 0.0 if dtype == "float32" else EPS[dtype]
    return rtol * ref + acc * bound + half * rounded_terms + TINY[dtype]


def check_result(out, like_dtype, shape, kind=np.ndarray):
    """The contract's output: a new contiguous tensor of the input's dtype and framework."""
    assert type(out) is kind, f"got {type(out)}"
    assert out.dtype == np_dtype(like_dtype), f"dtype {out.dtype}, want {like_dtype}"
    assert out.shape == tuple(shape), f"shape {out.shape}, want {tuple(shape)}"
    assert out.flags.c_contiguous


# ---- strided views of a logical [rows, n] matrix ------------------------------------------------

VIEWS = ("contiguous", "cols_step2", "transposed", "neg_cols", "nonContig3d", "bcast_rows", "bcast_cols")


def make_view(rng, kind, rows, n, dtype, scale=1.0, offset=0.0):
    """A [.., n] tensor (last dim n) whose layout is `kind`; its values are random."""
    if kind == "contiguous":
        return randn(rng, (rows, n), dtype, scale, offset)
    if kind == "cols_step2":
        return randn(rng, (rows, 2 * n), dtype, scale, offset)[:, ::2]
    if kind == "transposed":
        return randn(rng, (n, rows), dtype, scale, offset).T
    if kind == "neg_cols":
        return randn(rng, (rows, n), dtype, scale, offset)[::-1, ::-1]
    if kind == "nonContig3d":
        # [2, rows, n] taken from a [rows, 3, 2n] buffer: leading dims out of order, cols strided.
        base = randn(rng, (rows, 3, 2 * n), dtype, scale, offset)
        return base[:, 1:, ::2].transpose(1, 0, 2)
    if kind == "bcast_rows":  # every row the same memory (leading stride 0)
        return np.broadcast_to(randn(rng, (n,), dtype, scale, offset), (rows, n))
    if kind == "bcast_cols":  # every element of a row the same memory (col stride 0)
        return np.broadcast_to(randn(rng, (rows, 1), dtype, scale, offset), (rows, n))
    raise ValueError(kind)
