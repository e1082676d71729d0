"""torch.Tensor in, torch.Tensor out: every op on CPU tensors (against fp64 numpy and against
PyTorch's own ops), autograd-tracked inputs, views; on CUDA (gpu marker): what the CUDA backend
implements against the CPU reference, UnsupportedError for the rest, the caller's stream (CUDA
graph capture) and devices. Skipped as a whole without torch."""

import numpy as np
import pytest

import loraops
import numpy_ref as ref
from util import EPS, F32_RTOL, assert_close, dot_tol, elementwise_tol

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
KINDS = ("relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu")


def f64(t):
    return t.detach().to("cpu", torch.float64).numpy()


def randn(shape, dtype, device="cpu", seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(device, DTYPES[dtype])


def check_tensor(out, like, shape):
    assert isinstance(out, torch.Tensor)
    assert out.dtype == like.dtype and out.device == like.device
    assert tuple(out.shape) == tuple(shape) and out.is_contiguous()
    assert not out.requires_grad


# ---- CPU ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_row_ops_cpu(dtype):
    x = randn((3, 1023), dtype, seed=1, scale=2.0)
    w = randn((1023,), dtype, seed=2)
    b = randn((1023,), dtype, seed=3)
    cases = [
        (loraops.softmax(x), ref.softmax(f64(x)), torch.softmax(x.double(), -1)),
        (loraops.rms_norm(x, w), ref.rms_norm(f64(x), f64(w)),
         F.rms_norm(x.double(), (1023,), w.double(), eps=1e-6)),
        (loraops.layer_norm(x, w, b), ref.layer_norm(f64(x), f64(w), f64(b)),
         F.layer_norm(x.double(), (1023,), w.double(), b.double(), eps=1e-5)),
    ]
    torch_act = {"relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "gelu": F.gelu,
                 "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"), "silu": F.silu}
    for kind in KINDS:
        cases.append((loraops.activation(x, kind), ref.activation(f64(x), kind),
                      torch_act[kind](x.double())))
    for out, want, theirs in cases:
        check_tensor(out, x, x.shape)
        tol = elementwise_tol(want, dtype)
        assert_close(f64(out), want, tol, "vs fp64 numpy")
        assert_close(f64(out), f64(theirs), tol, "vs torch fp64")


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_cpu(dtype):
    a = randn((3, 20, 33), dtype, seed=4)
    b = randn((3, 40, 33), dtype, seed=5).transpose(1, 2)  # a transposed view
    c = randn((3, 20, 40), dtype, seed=6)
    out = loraops.matmul(a, b, alpha=0.5, beta=2.0, c=c)
    check_tensor(out, a, (3, 20, 40))
    want = 0.5 * (a.double() @ b.double()) + 2.0 * c.double()
    bound = ref.matmul(f64(a), f64(b), alpha=0.5, beta=2.0, c=f64(c), absolute=True)
    assert_close(f64(out), f64(want), dot_tol(f64(want), bound, 33, dtype), "matmul vs torch fp64")
    out = loraops.matmul(a[0], b[0].t(), trans_b=True)
    assert_close(f64(out), f64(a[0].double() @ b[0].double()),
                 dot_tol(f64(a[0].double() @ b[0].double()), ref.matmul(f64(a[0]), f64(b[0]), absolute=True),
                         33, dtype), "matmul trans_b")


@pytest.mark.parametrize("dtype", DTYPES)
def test_lora_cpu(dtype):
    m, k, n, r, s = 9, 40, 24, 8, 0.5
    x = randn((3, m, k), dtype, seed=7)
    w, a, b = randn((n, k), dtype, seed=8), randn((r, k), dtype, seed=9), randn((n, r), dtype, seed=10)
    bias = randn((n,), dtype, seed=11)
    y = loraops.lora_forward(x, w, a, b, s, bias)
    check_tensor(y, x, (3, m, n))
    want, lora = ref.lora_forward(f64(x), f64(w), f64(a), f64(b), s, f64(bias))
    bound, lb = ref.lora_forward(f64(x), f64(w), f64(a), f64(b), s, f64(bias), absolute=True)
    assert_close(f64(y), want, dot_tol(want, bound, k + r, dtype, rounded_terms=lb), "lora_forward")

    # lora_backward against torch autograd (in float64) of the same layer
    xd = x.double().requires_grad_()
    ad, bd = a.double().requires_grad_(), b.double().requires_grad_()
    yd = xd @ w.double().t() + bias.double() + s * (xd @ ad.t()) @ bd.t()
    g = randn((3, m, n), dtype, seed=12)
    yd.backward(g.double())
    gx, ga, gb = loraops.lora_backward(g, x, w, a, b, s)
    check_tensor(gx, x, x.shape)
    check_tensor(ga, x, a.shape)
    check_tensor(gb, x, b.shape)
    bounds = ref.lora_backward(f64(g), f64(x), f64(w), f64(a), f64(b), s, absolute=True)
    for got, want, bound, length in [(gx, xd.grad, bounds[0], n + r), (ga, ad.grad, bounds[1], 3 * m + n),
                                     (gb, bd.grad, bounds[2], 3 * m + k)]:
        # the loose (bound-sized) half term: an implementation may round g@lora_b / x@lora_a.T
        assert_close(f64(got), f64(want), dot_tol(f64(want), bound, length, dtype, rounded_terms=bound),
                     "lora_backward vs torch autograd")


@pytest.mark.parametrize("causal", (False, True))
@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_cpu(dtype, causal):
    q = randn((2, 8, 13, 32), dtype, seed=13)
    k = randn((2, 13, 2, 32), dtype, seed=14).transpose(1, 2)  # [B, S, H, D] memory
    v = randn((2, 2, 13, 32), dtype, seed=15)
    out = loraops.attention(q, k, v, causal=causal)
    check_tensor(out, q, q.shape)
    theirs = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=causal,
                                            enable_gqa=True)
    want, mag = ref.attention(f64(q), f64(k), f64(v), causal)
    tol = dot_tol(want, mag, 13, dtype, rounded_terms=mag) + 1e-4 * mag
    assert_close(f64(out), want, tol, "attention vs fp64 numpy")
    assert_close(f64(out), f64(theirs), tol, "attention vs torch sdpa fp64")


def test_requires_grad_and_views_cpu():
    x = randn((40, 33), "float32", seed=16).requires_grad_()
    out = loraops.softmax(x.t()[:, ::2])  # a transposed, strided view of a tracked leaf
    check_tensor(out, x, (33, 20))
    want = torch.softmax(x.detach().double().t()[:, ::2], -1)
    assert_close(f64(out), f64(want), elementwise_tol(f64(want), "float32"), "softmax view")
    w = torch.ones(33, requires_grad=True)
    check_tensor(loraops.rms_norm(x, w), x, x.shape)


def test_negated_view_keeps_its_sign():
    """x.conj().imag is a lazily negated view; its values must be read with the sign."""
    z = torch.complex(torch.randn(64), torch.randn(64))
    x = z.conj().imag
    assert x.is_neg()
    out = loraops.activation(x, "relu")
    assert torch.equal(out, torch.relu(x.resolve_neg()))


def test_other_torch_devices_are_refused():
    with pytest.raises(ValueError, match="softmax: argument 'x': expected a cpu or cuda tensor, got a torch.Tensor on meta"):
        loraops.softmax(torch.empty(3, 4, device="meta"))


def test_mixed_torch_and_numpy():
    x = randn((4, 8), "float32", seed=17)
    w = np.ones(8, np.float32)
    out = loraops.rms_norm(x, w)
    assert isinstance(out, torch.Tensor)
    out = loraops.rms_norm(x.numpy(), torch.ones(8))
    assert isinstance(out, np.ndarray)


@pytest.mark.parametrize("dtype,name", [(torch.int32, "int32"), (torch.float64, "float64"),
                                        (torch.int8, "int8"), (torch.bool, "bool")])
def test_torch_bad_dtypes(dtype, name):
    with pytest.raises(TypeError, match=f"softmax: argument 'x': expected dtype float32, float16 or bfloat16, got {name}"):
        loraops.softmax(torch.zeros(3, 4, dtype=dtype))


def test_torch_empty_cpu():
    for shape in [(0, 5), (3, 0)]:
        x = torch.zeros(shape)
        check_tensor(loraops.softmax(x), x, shape)
    y = loraops.matmul(torch.zeros(4, 0), torch.zeros(0, 5))
    check_tensor(y, torch.zeros(1), (4, 5))
    assert torch.all(y == 0)


# ---- CUDA -----------------------------------------------------------------------------------

def cuda_cases(dtype, device="cuda"):
    """Each op's arguments on `device`, as (op, args, kwargs)."""
    x = randn((5, 257), dtype, device, seed=20, scale=2.0)
    w = randn((257,), dtype, device, seed=21)
    a2 = randn((33, 65), dtype, device, seed=22)
    b2 = randn((65, 17), dtype, device, seed=23)
    lx = randn((7, 64), dtype, device, seed=24)
    lw, la, lb = (randn((48, 64), dtype, device, seed=25), randn((8, 64), dtype, device, seed=26),
                  randn((48, 8), dtype, device, seed=27))
    g = randn((7, 48), dtype, device, seed=28)
    q = randn((2, 4, 9, 32), dtype, device, seed=29)
    k = randn((2, 2, 11, 32), dtype, device, seed=30)
    v = randn((2, 2, 11, 32), dtype, device, seed=31)
    cases = [("matmul", (a2, b2), {}), ("softmax", (x,), {}), ("rms_norm", (x, w), {}),
             ("layer_norm", (x, w, w), {}), ("lora_forward", (lx, lw, la, lb, 0.5, lw[:, 0]), {}),
             ("lora_backward", (g, lx, lw, la, lb, 0.5), {}), ("attention", (q, k, v), {"causal": True})]
    cases += [("activation", (x, kind), {}) for kind in KINDS]
    return cases


def to_cpu(v):
    return v.cpu() if isinstance(v, torch.Tensor) else v


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ("custom", "vendor", "auto"))
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_ops_match_cpu_reference_or_are_unsupported(dtype, impl):
    """What the CUDA backend has must match the CPU reference; what it lacks must say so."""
    for op, args, kw in cuda_cases(dtype):
        fn = getattr(loraops, op)
        if not loraops.has_impl(op, "cuda", impl, dtype):
            with pytest.raises(loraops.UnsupportedError, match=f"{op}: argument 'impl'.*on cuda"):
                fn(*args, impl=impl, **kw)
            continue
        try:
            out = fn(*args, impl=impl, **kw)
        except loraops.UnsupportedError as e:
            # cuDNN (attention, norms, activations) refuses a libcudnn of another version than its
            # build's (PyTorch's), and shapes its own support check rejects (the C++ GPU tests
            # require the common ones: test_cuda_rows_vendor.cpp, test_cuda_attention.cpp)
            if impl == "vendor" and ("built against" in str(e) or (
                    "cuDNN refused" in str(e) and op in ("rms_norm", "layer_norm", "activation"))):
                continue
            raise
        want = fn(*[to_cpu(v) for v in args], impl="reference", **kw)
        outs, wants = (out, want) if isinstance(out, tuple) else ((out,), (want,))
        for o, wnt in zip(outs, wants):
            assert o.device == args[0].device and o.dtype == args[0].dtype and o.is_contiguous()
            torch.cuda.synchronize()
            scale = float(np.abs(f64(wnt)).max(initial=0.0))
            # The CPU reference is exact to the dtype's rounding; allow fp32 noise relative to the
            # data's scale (sums of up to ~65 products here) and a ulp of the dtype.
            rtol = F32_RTOL if dtype == "float32" else EPS[dtype]
            tol = 2 * rtol * np.abs(f64(wnt)) + 8 * F32_RTOL * scale + (0 if dtype == "float32" else EPS[dtype] * scale)
            assert_close(f64(o), f64(wnt), tol, f"{op} impl={impl} on cuda vs cpu reference")


@pytest.mark.gpu
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_activation_views_and_empty(kind):
    if not loraops.has_impl("activation", "cuda", "custom"):
        pytest.skip("no CUDA activation in this build")
    base = randn((64, 3, 130), "float32", "cuda", seed=40, scale=3.0)
    for x in (base[:, 1, ::2], base.transpose(0, 2), base[:, :, 1:], base[5, 2]):
        out = loraops.activation(x, kind)
        want = loraops.activation(x.cpu(), kind, impl="reference")
        torch.cuda.synchronize()
        assert out.device == x.device and out.shape == x.shape and out.is_contiguous()
        assert_close(f64(out), f64(want), elementwise_tol(f64(want), "float32") * 2, f"cuda {kind} view")
    e = torch.zeros((0, 7), device="cuda")
    assert loraops.activation(e, kind).shape == (0, 7)
    t = randn((1000,), "float32", "cuda", seed=41).requires_grad_()
    assert not loraops.activation(t, kind).requires_grad


@pytest.mark.gpu
def test_cuda_runs_on_current_stream_and_captures_in_a_graph():
    """The op is launched on torch's current stream: capturing it in a CUDA graph works (a launch
    on any other stream, or a device-wide sync, would break the capture) and replays correctly."""
    if not loraops.has_impl("activation", "cuda", "custom"):
        pytest.skip("no CUDA activation in this build")
    x = randn((4096,), "float32", "cuda", seed=42)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up on a side stream, as torch's graph docs do
        y0 = loraops.activation(x, "silu")
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    assert_close(f64(y0), ref.activation(f64(x), "silu"), 2e-5 * (1 + np.abs(f64(x))), "side stream")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = loraops.activation(x, "silu")
    x.copy_(randn((4096,), "float32", "cuda", seed=43))
    graph.replay()
    torch.cuda.synchronize()
    assert_close(f64(y), ref.activation(f64(x), "silu"), 2e-5 * (1 + np.abs(f64(x))), "graph replay")


@pytest.mark.gpu
def test_cuda_mixed_devices_are_refused():
    x = randn((4, 8), "float32", "cuda", seed=44)
    with pytest.raises(ValueError, match="rms_norm: argument 'weight': expected device cuda:0 \\(as x\\), got cpu"):
        loraops.rms_norm(x, torch.ones(8))
    with pytest.raises(ValueError, match="argument 'b'"):
        loraops.matmul(x, torch.ones(8, 3))


@pytest.mark.gpu
def test_cuda_second_device():
    if torch.cuda.device_count() < 2:
        pytest.skip("one GPU")
    if not loraops.has_impl("activation", "cuda", "custom"):
        pytest.skip("no CUDA activation in this build")
    x = randn((3, 1000), "float32", "cuda:1", seed=45)
    out = loraops.activation(x, "gelu")
    torch.cuda.synchronize(1)
    assert out.device == x.device
    assert_close(f64(out), ref.activation(f64(x), "gelu"), elementwise_tol(ref.activation(f64(x), "gelu"), "float32") * 2,
                 "cuda:1")
