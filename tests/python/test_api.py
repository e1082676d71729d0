"""The package's surface: names and signatures of the contract, introspection, frameworks
(numpy, ml_dtypes bfloat16, other DLPack producers), outputs and threads."""

import concurrent.futures
import importlib.metadata
import inspect
import subprocess
import sys

import numpy as np
import pytest

import loraops
import numpy_ref as ref
from util import assert_close, check_result, elementwise_tol, np_dtype, randn, rng_for

P = inspect.Parameter
POS, KW = P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY

# The contract's signatures: (name, kind, default) per parameter; P.empty = required.
SIGNATURES = {
    "matmul": [("a", POS, P.empty), ("b", POS, P.empty), ("trans_a", KW, False), ("trans_b", KW, False),
               ("alpha", KW, 1.0), ("beta", KW, 0.0), ("c", KW, None), ("allow_tf32", KW, False),
               ("impl", KW, "auto")],
    "softmax": [("x", POS, P.empty), ("dim", POS, -1), ("impl", KW, "auto")],
    "rms_norm": [("x", POS, P.empty), ("weight", POS, None), ("eps", POS, 1e-6), ("impl", KW, "auto")],
    "layer_norm": [("x", POS, P.empty), ("weight", POS, None), ("bias", POS, None), ("eps", POS, 1e-5),
                   ("impl", KW, "auto")],
    "activation": [("x", POS, P.empty), ("kind", POS, P.empty), ("impl", KW, "auto")],
    "lora_forward": [("x", POS, P.empty), ("weight", POS, P.empty), ("lora_a", POS, P.empty),
                     ("lora_b", POS, P.empty), ("scale", POS, P.empty), ("bias", POS, None),
                     ("return_xa", KW, False), ("impl", KW, "auto")],
    "lora_backward": [("grad_y", POS, P.empty), ("x", POS, P.empty), ("weight", POS, P.empty),
                      ("lora_a", POS, P.empty), ("lora_b", POS, P.empty), ("scale", POS, P.empty),
                      ("xa", KW, None), ("impl", KW, "auto")],
    "attention": [("q", POS, P.empty), ("k", POS, P.empty), ("v", POS, P.empty), ("causal", KW, False),
                  ("scale", KW, None), ("impl", KW, "auto")],
    "has_impl": [("op", POS, P.empty), ("device", POS, "cpu"), ("impl", POS, "auto"),
                 ("dtype", POS, "float32")],
}


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_signature_and_docstring(name):
    fn = getattr(loraops, name)
    got = [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]
    assert got == SIGNATURES[name]
    assert fn.__doc__ and len(fn.__doc__) > 80
    assert name in loraops.__all__


def test_exports_and_version():
    for name in ("UnsupportedError", "built_with_cuda", "built_with_blas"):
        assert name in loraops.__all__ and hasattr(loraops, name)
    assert isinstance(loraops.built_with_cuda(), bool)
    assert isinstance(loraops.built_with_blas(), bool)
    assert loraops.__version__ == importlib.metadata.version("loraops")
    assert loraops.__version__[0].isdigit()


def test_import_is_light():
    """`import loraops` pulls in neither torch nor ml_dtypes (they load only with their tensors)."""
    code = ("import sys, loraops; "
            "print(','.join(m for m in ('torch', 'ml_dtypes') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_has_impl():
    assert loraops.has_impl("softmax")
    for op in SIGNATURES:
        if op != "has_impl":
            assert loraops.has_impl(op, "cpu", "reference", "float32")
            assert loraops.has_impl(op, "cpu", "custom", "bfloat16")
    assert not loraops.has_impl("softmax", "cpu", "vendor")
    assert loraops.has_impl("matmul", "cpu", "vendor") == loraops.built_with_blas()
    assert loraops.has_impl("lora_forward", "cpu", "vendor", "float16") == loraops.built_with_blas()
    # dtype and device spelled the other ways a caller has at hand
    assert loraops.has_impl("softmax", "cpu", "custom", np.float16)
    assert loraops.has_impl("softmax", "cpu", "custom", np.dtype("float32"))
    assert loraops.has_impl("softmax", "cpu", "custom", np_dtype("bfloat16"))
    assert loraops.has_impl("activation", "cuda:0", "custom") == loraops.built_with_cuda()
    if not loraops.built_with_cuda():
        assert not loraops.has_impl("activation", "cuda")


@pytest.mark.parametrize("args,arg", [(("nope",), "op"), (("softmax", "tpu"), "device"),
                                      (("softmax", "cpu", "fast"), "impl"),
                                      (("softmax", "cpu", "auto", "float64"), "dtype")])
def test_has_impl_bad_arguments(args, arg):
    with pytest.raises(ValueError, match=f"has_impl: argument '{arg}'"):
        loraops.has_impl(*args)


# ---- frameworks and outputs ----------------------------------------------------------------

class Producer:
    """A minimal non-numpy DLPack producer (as another framework's CPU tensor would be)."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


class CudaProducer(Producer):
    def __dlpack_device__(self):
        return (2, 0)


def test_other_dlpack_producers_give_numpy():
    x = randn(rng_for("producer"), (3, 17), "float32")
    out = loraops.softmax(Producer(x))
    check_result(out, "float32", x.shape)
    assert_close(out, ref.softmax(x), elementwise_tol(ref.softmax(x), "float32"), "producer")
    w = randn(rng_for("producer-w"), (17,), "float32")
    out = loraops.rms_norm(x, Producer(w))  # mixed producers: the first tensor decides
    check_result(out, "float32", x.shape)


class Unexportable(Producer):
    """Looks like a float32 array but its export fails (as a tensor on an unknown device would)."""

    dtype = np.dtype("float32")
    shape = (3,)

    def __dlpack__(self, **kw):
        raise BufferError("cannot export")


def test_failed_export_is_not_blamed_on_the_dtype():
    with pytest.raises(TypeError, match="argument 'x'.*Unexportable of dtype float32 that DLPack could not export"):
        loraops.softmax(Unexportable(np.zeros(3, np.float32)))


def test_non_torch_cuda_producer_is_refused():
    with pytest.raises(TypeError, match="softmax: argument 'x'.*DLPack device type 2"):
        loraops.softmax(CudaProducer(np.zeros((2, 2), np.float32)))


@pytest.mark.parametrize("dtype", ("float32", "float16", "bfloat16"))
def test_outputs_are_new_and_inputs_untouched(dtype):
    x = randn(rng_for("new", dtype), (4, 9), dtype)
    w = randn(rng_for("new-w", dtype), (9,), dtype)
    keep_x, keep_w = x.copy(), w.copy()
    outs = [loraops.softmax(x), loraops.rms_norm(x, w), loraops.layer_norm(x, w, w),
            loraops.activation(x, "gelu"), loraops.matmul(x, x, trans_b=True),
            loraops.lora_forward(x, x, x[:2], x[:, :2], 1.0),
            loraops.attention(x[None, None], x[None, None], x[None, None])]
    outs += list(loraops.lora_backward(x[:, :4], x, x[:4], x[:2], x[:4, :2], 1.0))
    for o in outs:
        check_result(o, dtype, o.shape)
        assert not np.shares_memory(o, x) and o.flags.writeable and o.flags.owndata
    assert np.array_equal(x.view(np.uint8), keep_x.view(np.uint8))
    assert np.array_equal(w.view(np.uint8), keep_w.view(np.uint8))


def test_bfloat16_view_of_readonly_and_strided():
    """ml_dtypes bfloat16 inputs that are read-only and strided (uint16 views must keep both)."""
    bf = np_dtype("bfloat16")
    base = randn(rng_for("bf-ro"), (6, 20), "bfloat16")
    x = base[::2, 1::3]
    x.flags.writeable = False
    out = loraops.activation(x, "tanh")
    assert out.dtype == bf and out.shape == x.shape
    assert_close(out, ref.activation(x, "tanh"), elementwise_tol(ref.activation(x, "tanh"), "bfloat16"),
                 "bf16 ro view")
    out = loraops.softmax(np.broadcast_to(x[0], (3, x.shape[1])))
    assert out.dtype == bf


def test_numpy_scalars_accepted():
    x = randn(rng_for("np-scalars"), (3, 5), "float32")
    a = loraops.softmax(x, dim=np.int64(0))
    assert np.array_equal(a, loraops.softmax(x, dim=0))
    b = loraops.rms_norm(x, eps=np.float32(1e-3))
    assert np.array_equal(b, loraops.rms_norm(x, eps=1e-3))
    c = loraops.matmul(x, x, trans_b=np.bool_(True), alpha=np.float16(2.0))
    assert np.array_equal(c, loraops.matmul(x, x, trans_b=True, alpha=2.0))


def test_threads():
    """The GIL is released around the op; concurrent calls give the same results as serial."""
    rng = rng_for("threads")
    xs = [randn(rng, (64, 257), "float32") for _ in range(8)]
    serial = [loraops.layer_norm(x) for x in xs]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(loraops.layer_norm, xs))
    for s, p in zip(serial, parallel):
        assert np.array_equal(s, p)


# ---- torch tensors read directly (plain ones) and through DLPack (the rest) -----------------

def test_torch_read_directly_and_through_dlpack_agree():
    """Plain tensors and nn.Parameter are read directly; subclasses go through DLPack. Both give
    the same values, and outputs are plain torch tensors of the first input's dtype and device."""
    torch = pytest.importorskip("torch")

    class Sub(torch.Tensor):
        pass

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 16, generator=g)
    w, a, b = (torch.randn(s, generator=g) for s in ((8, 16), (4, 16), (8, 4)))
    want = loraops.lora_forward(x.numpy(), w.numpy(), a.numpy(), b.numpy(), 0.5)
    for wrap in (lambda t: t, torch.nn.Parameter, lambda t: t.as_subclass(Sub)):
        got = loraops.lora_forward(wrap(x), wrap(w), wrap(a), wrap(b), 0.5)
        assert type(got) is torch.Tensor and not got.requires_grad
        assert got.dtype == torch.float32 and got.shape == (3, 2, 8) and got.is_contiguous()
        assert np.array_equal(got.numpy(), want)


def test_torch_views_shapes_and_ranks():
    torch = pytest.importorskip("torch")
    base = torch.arange(48, dtype=torch.float32).reshape(6, 8) / 10
    for x in (base.t(), base[1::2, ::3], base[0].expand(5, 8), base[2]):  # strided, 0-stride, 1-d
        got = loraops.softmax(x)
        assert np.allclose(got.numpy(), loraops.softmax(np.ascontiguousarray(x.numpy())))
    s = loraops.activation(torch.tensor(-2.0), "relu")  # a 0-d output
    assert type(s) is torch.Tensor and s.shape == () and s.item() == 0.0
    with pytest.raises(ValueError, match=r"softmax: argument 'x': expected rank 0\.\.8, got rank 9"):
        loraops.softmax(torch.zeros((1,) * 9))


def test_torch_with_numpy_bfloat16():
    """A torch bfloat16 first tensor with an ml_dtypes bfloat16 array: torch output."""
    torch = pytest.importorskip("torch")
    x = torch.randn(4, 8).to(torch.bfloat16)
    w = np.ones(8, np_dtype("bfloat16"))
    out = loraops.rms_norm(x, w)
    assert type(out) is torch.Tensor and out.dtype == torch.bfloat16
    assert torch.equal(out, loraops.rms_norm(x, torch.ones(8, dtype=torch.bfloat16)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF dynamic symbols")
def test_extension_exports_only_its_init():
    """Symbols from the module's static archives (libloraops, libstdc++.a where a toolchain has no
    shared one) must stay private: exported, they bind against another library's copies in the
    process (PyTorch's libstdc++), which crashed `import loraops; import torch` on the H200."""
    import shutil

    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("no nm")
    out = subprocess.run([nm, "-D", "--defined-only", loraops._ext.__file__], capture_output=True,
                         text=True, check=True).stdout
    names = [line.split()[-1] for line in out.splitlines() if line.strip()]
    assert names and all(n.startswith("PyInit_") for n in names), names[:20]
