"""loraops.torch: the custom ops against PyTorch's own math, their gradients against PyTorch
autograd, fake implementations (opcheck, torch.compile), CUDA-graph capture, LoRALinear and
patch_peft against PEFT (state_dict round trips, a tiny Llama). Skipped as a whole without torch;
the PEFT tests skip without peft/transformers, the CUDA cases without a GPU."""

import copy
import pickle
import shutil

import pytest

torch = pytest.importorskip("torch")

import loraops  # noqa: E402
import loraops.torch as lt  # noqa: E402
from loraops.torch import _math  # noqa: E402

F = torch.nn.functional
pytestmark = pytest.mark.torch

CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])
KINDS = ("relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu")


def randn(*shape, device="cpu", dtype=torch.float32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(device, dtype)


def close(got, want, rtol=1e-4, atol=1e-5, what=""):
    torch.testing.assert_close(got.double().cpu(), want.double().cpu(), rtol=rtol, atol=atol,
                               msg=lambda m: f"{what}: {m}")


def sdpa_ref(q, k, v, causal, scale=None):
    """PyTorch's attention (float64), with loraops' bottom-right causal mask and zeros for a query
    that sees no key."""
    q, k, v = q.double(), k.double(), v.double()
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    sq, sk = q.shape[-2], k.shape[-2]
    mask = None
    if causal:
        mask = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(sk - sq)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    if causal:
        out = out.masked_fill(~mask.any(-1, keepdim=True), 0.0)
    return out


# ---- forward ops vs PyTorch -----------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_ops_match_torch(device):
    x = randn(4, 6, 37, device=device, seed=1, scale=2.0)
    w, b = randn(37, device=device, seed=2), randn(37, device=device, seed=3)
    xd = x.double()
    close(lt.softmax(x), torch.softmax(xd, -1), what="softmax")
    close(lt.softmax(x, 1), torch.softmax(xd, 1), what="softmax dim 1")
    close(lt.rms_norm(x, w), F.rms_norm(xd, (37,), w.double(), eps=1e-6), what="rms_norm")
    close(lt.rms_norm(x), F.rms_norm(xd, (37,), eps=1e-6), what="rms_norm no weight")
    close(lt.layer_norm(x, w, b), F.layer_norm(xd, (37,), w.double(), b.double()),
          what="layer_norm")
    acts = {"relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "gelu": F.gelu,
            "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"), "silu": F.silu}
    for kind in KINDS:
        close(lt.activation(x, kind), acts[kind](xd), what=kind)
    a, bm = randn(3, 20, 33, device=device, seed=4), randn(3, 40, 33, device=device, seed=5)
    c = randn(3, 20, 40, device=device, seed=6)
    close(lt.matmul(a, bm, trans_b=True, alpha=0.5, beta=2.0, c=c),
          0.5 * a.double() @ bm.double().transpose(1, 2) + 2.0 * c.double(), what="matmul")
    close(lt.matmul(a[0].t(), bm[0].t(), trans_a=True), a[0].double() @ bm[0].double().t(),
          what="matmul trans_a")


@pytest.mark.parametrize("device", DEVICES)
def test_lora_ops_match_torch(device):
    x = randn(2, 5, 48, device=device, seed=7)
    w, a = randn(40, 48, device=device, seed=8) / 7, randn(8, 48, device=device, seed=9) / 7
    b, bias = randn(40, 8, device=device, seed=10) / 3, randn(40, device=device, seed=11)
    want = (x.double() @ w.double().t() + bias.double()
            + 0.5 * (x.double() @ a.double().t()) @ b.double().t())
    y = lt.lora_forward(x, w, a, b, 0.5, bias)
    assert y.shape == (2, 5, 40) and y.dtype == x.dtype and y.device == x.device
    close(y, want, what="lora_forward")
    g = randn(2, 5, 40, device=device, seed=12)
    gx, ga, gb = lt.lora_backward(g, x, w, a, b, 0.5)
    g2, x2 = g.double().reshape(-1, 40), x.double().reshape(-1, 48)
    close(gx, (g2 @ w.double() + 0.5 * (g2 @ b.double()) @ a.double()).reshape(x.shape), what="gx")
    close(ga, 0.5 * (g2 @ b.double()).t() @ x2, what="ga")
    close(gb, 0.5 * g2.t() @ (x2 @ a.double().t()), what="gb")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal,sq,sk", [(False, 7, 9), (True, 9, 9), (True, 5, 9), (True, 9, 5)])
def test_attention_matches_torch(device, causal, sq, sk):
    q = randn(2, 4, sq, 16, device=device, seed=13)
    k, v = randn(2, 2, sk, 16, device=device, seed=14), randn(2, 2, sk, 16, device=device, seed=15)
    close(lt.attention(q, k, v, causal=causal), sdpa_ref(q, k, v, causal), what="attention")
    close(lt.attention(q, k, v, causal=causal, scale=0.3), sdpa_ref(q, k, v, causal, 0.3),
          what="attention scale")


def test_fallback_math_matches_loraops_reference():
    """The PyTorch math that runs where loraops has no kernel agrees with loraops' reference,
    edge cases included (a row of -inf, queries that see no key, K = 0, r = 0)."""
    x = randn(3, 11, seed=20)
    x[1] = float("-inf")
    close(_math.softmax(x, -1), loraops.softmax(x, impl="reference"), what="softmax -inf row")
    q, k, v = randn(1, 2, 6, 8, seed=21), randn(1, 1, 3, 8, seed=22), randn(1, 1, 3, 8, seed=23)
    close(_math.attention(q, k, v, True, None), loraops.attention(q, k, v, causal=True,
                                                                  impl="reference"),
          what="attention masked rows")
    e = torch.zeros(1, 1, 0, 8)
    assert torch.equal(_math.attention(q, e, e, False, None), torch.zeros_like(q))
    xw, w0, a0, b0 = randn(4, 0), torch.zeros(5, 0), torch.zeros(2, 0), randn(5, 2, seed=24)
    close(_math.lora_forward(xw, w0, a0, b0, 2.0, None),
          loraops.lora_forward(xw, w0, a0, b0, 2.0, impl="reference"), what="K = 0")
    xr, wr = randn(4, 6, seed=25), randn(5, 6, seed=26)
    close(_math.lora_forward(xr, wr, torch.zeros(0, 6), torch.zeros(5, 0), 2.0, None),
          xr.double() @ wr.double().t(), what="r = 0")


def test_float64_falls_back_and_named_impls_do_not():
    x = randn(3, 5, dtype=torch.float64)
    close(lt.softmax(x), torch.softmax(x, -1), rtol=1e-12, atol=1e-12, what="fp64 softmax")
    assert lt.softmax(x).dtype == torch.float64
    with pytest.raises(TypeError, match="softmax: argument 'x'"):
        lt.softmax(x, impl="custom")
    with pytest.raises(ValueError, match="argument 'impl'"):
        lt.softmax(x, impl="fast")


def test_eager_inference_skips_the_dispatcher_with_the_same_result():
    """Under no_grad, eager calls run the implementation directly; the custom op gives the same."""
    x, w, a, b = randn(3, 16, seed=26), randn(8, 16, seed=27), randn(4, 16, seed=28), randn(8, 4)
    with torch.no_grad():
        direct = lt.lora_forward(x, w, a, b, 0.5)
        via_op = torch.ops.loraops.lora_forward(x, w, a, b, 0.5, None, "auto")
    assert torch.equal(direct, via_op)


def test_eager_autograd_skips_the_dispatcher_with_the_same_gradients():
    """With autograd recording, eager calls run the op's eager autograd.Function (its grad_fn
    says so); values and gradients equal those of the custom op through torch's dispatcher (bit
    for bit, except lora_b's: the eager backward reads the forward's x@A.T, rounded to the input
    dtype, where the op's recomputes it; in float32, as here, only the order of the sums
    differs)."""
    x, w, a, b = randn(3, 16, seed=26), randn(8, 16, seed=27), randn(4, 16, seed=28), randn(8, 4)
    bias, g = randn(8, seed=29), randn(3, 8, seed=30)
    ops = torch.ops.loraops
    cases = [
        ("lora_forward", lambda t: lt.lora_forward(t[0], t[1], t[2], t[3], 0.5, t[4]),
         lambda t: ops.lora_forward(t[0], t[1], t[2], t[3], 0.5, t[4], "auto"),
         [x, w, a, b, bias], [True, False, True, True, True], g),
        ("softmax", lambda t: lt.softmax(t[0]), lambda t: ops.softmax(t[0], -1, "auto"),
         [x], [True], randn(3, 16, seed=31)),
        ("rms_norm", lambda t: lt.rms_norm(t[0], t[1], 1e-5),
         lambda t: ops.rms_norm(t[0], t[1], 1e-5, "auto"), [x, randn(16, seed=32)],
         [True, True], randn(3, 16, seed=33)),
    ]
    for name, eager, via_op, inputs, need, grad in cases:
        got, want = ([t.detach().clone().requires_grad_(n) for t, n in zip(inputs, need)]
                     for _ in range(2))
        y_eager, y_op = eager(got), via_op(want)
        assert type(y_eager.grad_fn).__name__ == f"{name}_eagerBackward", name
        assert type(y_op.grad_fn).__name__ != type(y_eager.grad_fn).__name__, name
        assert torch.equal(y_eager, y_op), name
        y_eager.backward(grad)
        y_op.backward(grad)
        for i, (p, q) in enumerate(zip(got, want)):
            assert (p.grad is None) == (q.grad is None), f"{name} input {i}"
            if p.grad is None:
                continue
            if name == "lora_forward" and i == 3:  # eager: from the forward's x@A.T, not a recompute
                close(p.grad, q.grad, 1e-5, 1e-5, f"{name} grad of input {i}")
            else:
                assert torch.equal(p.grad, q.grad), f"{name} grad of input {i}"


def test_fallback_counts():
    lt.fallback_counts(reset=True)
    lt.rms_norm(randn(2, 4, dtype=torch.float64))
    lt.rms_norm(randn(2, 4))  # a loraops kernel: not counted
    assert lt.fallback_counts(reset=True) == {("rms_norm", "cpu", "float64"): 1}
    assert lt.fallback_counts() == {}


def test_clear_errors():
    x, w = randn(2, 8), randn(6, 8)
    with pytest.raises(ValueError, match=r"lora_forward: argument 'lora_a': expected shape \[r, 8"):
        lt.lora_forward(x, w, randn(4, 7), randn(6, 4), 1.0)
    with pytest.raises(ValueError, match=r"lora_forward: argument 'lora_b': expected shape \[6, 4"):
        lt.lora_forward(x, w, randn(4, 8), randn(4, 6), 1.0)
    with pytest.raises(ValueError, match=r"lora_forward: argument 'x': expected last dim 8"):
        lt.lora_forward(randn(2, 9), w, randn(4, 8), randn(6, 4), 1.0)
    with pytest.raises(TypeError, match="lora_forward: argument 'scale'"):
        lt.lora_forward(x, w, randn(4, 8), randn(6, 4), "1")
    with pytest.raises(ValueError, match="rms_norm: argument 'weight'"):
        lt.rms_norm(x, randn(7))
    with pytest.raises(ValueError, match="attention: argument 'k'"):
        lt.attention(randn(1, 3, 4, 8), randn(1, 2, 4, 8), randn(1, 2, 4, 8))
    with pytest.raises(ValueError, match="activation: argument 'kind'"):
        lt.activation(x, "swish")
    with pytest.raises(TypeError, match="argument 'x': expected a torch.Tensor"):
        lt.softmax([1.0, 2.0])
    with pytest.raises(TypeError, match="lora_forward: argument 'lora_a'"):
        lt.lora_forward(x.double(), w.double(), randn(4, 8), randn(6, 4).double(), 1.0)
    with pytest.raises(ValueError, match="LoRALinear: argument 'r'"):
        lt.LoRALinear(8, 6, r=0)


# ---- gradients vs PyTorch autograd ----------------------------------------------------------

def grads(fn, inputs, g):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    out.backward(g)
    return out.detach(), [t.grad for t in leaves]


def compare_grads(ours, theirs, inputs, g, what, rtol=1e-4, atol=1e-5):
    y1, g1 = grads(ours, inputs, g)
    y2, g2 = grads(theirs, [t.double() for t in inputs], g.double())
    close(y1, y2, rtol, atol, what + " forward")
    for i, (a, b) in enumerate(zip(g1, g2)):
        close(a, b, rtol, atol, f"{what} grad of input {i}")


@pytest.mark.parametrize("device", DEVICES)
def test_lora_forward_grads(device):
    x = randn(3, 4, 24, device=device, seed=30)
    w, a = randn(20, 24, device=device, seed=31) / 5, randn(6, 24, device=device, seed=32) / 5
    b, bias = randn(20, 6, device=device, seed=33) / 3, randn(20, device=device, seed=34)
    g = randn(3, 4, 20, device=device, seed=35)

    def theirs(x, w, a, b, bias):
        return F.linear(x, w, bias) + 1.5 * F.linear(F.linear(x, a), b)

    # weight frozen (LoRA): grads for x, a, b, bias; weight.grad stays None
    leaves = [t.detach().clone().requires_grad_(i != 1) for i, t in enumerate((x, w, a, b, bias))]
    lt.lora_forward(leaves[0], leaves[1], leaves[2], leaves[3], 1.5, leaves[4]).backward(g)
    assert leaves[1].grad is None
    _, want = grads(theirs, [t.double() for t in (x, w, a, b, bias)], g.double())
    for i in (0, 2, 3, 4):
        close(leaves[i].grad, want[i], what=f"lora_forward grad {i}")
    # a trainable weight gets its gradient too (PyTorch math)
    compare_grads(lambda *t: lt.lora_forward(t[0], t[1], t[2], t[3], 1.5, t[4]), theirs,
                  [x, w, a, b, bias], g, "lora_forward")


@pytest.mark.parametrize("device", DEVICES)
def test_row_op_grads(device):
    x = randn(5, 33, device=device, seed=40, scale=2.0)
    w, b = randn(33, device=device, seed=41), randn(33, device=device, seed=42)
    g = randn(5, 33, device=device, seed=43)
    compare_grads(lambda x: lt.softmax(x), lambda x: torch.softmax(x, -1), [x], g, "softmax")
    compare_grads(lambda x: lt.softmax(x, 0), lambda x: torch.softmax(x, 0), [x], g, "softmax 0")
    compare_grads(lambda x, w: lt.rms_norm(x, w, 1e-5),
                  lambda x, w: F.rms_norm(x, (33,), w, 1e-5), [x, w], g, "rms_norm")
    compare_grads(lambda x: lt.rms_norm(x), lambda x: F.rms_norm(x, (33,), eps=1e-6), [x], g,
                  "rms_norm no weight")
    compare_grads(lambda x, w, b: lt.layer_norm(x, w, b),
                  lambda x, w, b: F.layer_norm(x, (33,), w, b), [x, w, b], g, "layer_norm")
    acts = {"relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "gelu": F.gelu,
            "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"), "silu": F.silu}
    for kind in KINDS:
        compare_grads(lambda x: lt.activation(x, kind), acts[kind], [x], g, kind)
    a, bm, c = (randn(4, 7, device=device, seed=44), randn(9, 7, device=device, seed=45),
                randn(4, 9, device=device, seed=46))
    compare_grads(lambda a, b, c: lt.matmul(a, b, trans_b=True, alpha=0.5, beta=2.0, c=c),
                  lambda a, b, c: 0.5 * a @ b.t() + 2.0 * c, [a, bm, c], randn(4, 9, seed=47,
                                                                             device=device),
                  "matmul")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal,sq,sk", [(False, 6, 8), (True, 8, 8), (True, 4, 8), (True, 8, 4)])
def test_attention_grads(device, causal, sq, sk):
    q = randn(2, 4, sq, 8, device=device, seed=50)
    k, v = randn(2, 2, sk, 8, device=device, seed=51), randn(2, 2, sk, 8, device=device, seed=52)
    g = randn(2, 4, sq, 8, device=device, seed=53)
    compare_grads(lambda q, k, v: lt.attention(q, k, v, causal=causal),
                  lambda q, k, v: sdpa_ref(q, k, v, causal), [q, k, v], g, "attention")


def test_gradcheck_float64():
    """torch.autograd.gradcheck (finite differences, float64: the PyTorch-math path) of every
    backward formula."""
    def leaf(*shape, seed):
        return randn(*shape, dtype=torch.float64, seed=seed).requires_grad_()

    x, w, b = leaf(3, 6, seed=60), leaf(6, seed=61), leaf(6, seed=62)
    gc = torch.autograd.gradcheck
    assert gc(lambda x: lt.softmax(x), (x,))
    assert gc(lambda x, w: lt.rms_norm(x, w), (x, w))
    assert gc(lambda x, w, b: lt.layer_norm(x, w, b), (x, w, b))
    for kind in ("sigmoid", "tanh", "gelu", "gelu_tanh", "silu"):
        assert gc(lambda x: lt.activation(x, kind), (x,))
    lw, la, lb = leaf(5, 6, seed=63), leaf(2, 6, seed=64), leaf(5, 2, seed=65)
    lbias = leaf(5, seed=66)
    assert gc(lambda *t: lt.lora_forward(t[0], t[1], t[2], t[3], 0.7, t[4]), (x, lw, la, lb, lbias))
    q, k, v = leaf(1, 2, 5, 4, seed=67), leaf(1, 1, 3, 4, seed=68), leaf(1, 1, 3, 4, seed=69)
    assert gc(lambda q, k, v: lt.attention(q, k, v, causal=True), (q, k, v))
    assert gc(lambda a, b: lt.matmul(a, b, trans_a=True),
              (leaf(6, 3, seed=70), leaf(6, 2, seed=71)))


def test_opcheck():
    """torch.library.opcheck: schemas, fake (meta) implementations and autograd registrations."""
    opcheck = getattr(torch.library, "opcheck", None)
    if opcheck is None:
        pytest.skip("torch.library.opcheck needs torch >= 2.4")
    x, w, b = randn(3, 16, seed=80), randn(16, seed=81), randn(16, seed=82)
    la, lb, lw = randn(4, 16, seed=83), randn(8, 4, seed=84), randn(8, 16, seed=85)
    q, k = randn(1, 2, 5, 8, seed=86), randn(1, 1, 7, 8, seed=87)
    ops = torch.ops.loraops
    cases = [
        (ops.matmul, (x, lw, None, False, True, 1.0, 0.0, False, "auto")),
        (ops.softmax, (x, -1, "auto")),
        (ops.rms_norm, (x, w, 1e-6, "auto")),
        (ops.layer_norm, (x, w, b, 1e-5, "auto")),
        (ops.activation, (x, "silu", "auto")),
        (ops.lora_forward, (x, lw, la, lb, 2.0, w[:8], "auto")),
        (ops.lora_forward_xa, (x, lw, la, lb, 2.0, w[:8], "auto")),
        (ops.lora_backward, (randn(3, 8, seed=88), x, lw, la, lb, 2.0, "auto")),
        (ops.lora_backward, (randn(3, 8, seed=88), x, lw, la, lb, 2.0, "auto", x @ la.t())),
        (ops.attention, (q, k, k, True, None, "auto")),
    ]
    for op, args in cases:
        args = tuple(a.detach().requires_grad_() if isinstance(a, torch.Tensor)
                     and op is not ops.lora_backward else a for a in args)
        opcheck(op, args, test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))


# ---- LoRALinear: torch.compile, CUDA graphs, dtypes -----------------------------------------

def lora_layer(device="cpu", dtype=torch.float32, **kw):
    torch.manual_seed(0)
    m = lt.LoRALinear(32, 24, r=4, lora_alpha=8, **kw).to(device, dtype)
    with torch.no_grad():
        m.lora_B["default"].weight.normal_(0, 0.1)
    return m


def lora_reference(m, x):
    name = m.adapter_name
    return (m.base_layer(x) + m.scaling[name]
            * m.lora_B[name](m.lora_A[name](m.lora_dropout[name](x))))


def have_compiler():
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend):
    if backend == "inductor" and not have_compiler():
        pytest.skip("no C++ compiler for the inductor on the CPU")
    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported on this Python")
    m = lora_layer()
    x = randn(2, 5, 32, seed=90)
    cm = torch.compile(m, fullgraph=True, backend=backend)
    y = cm(x)
    close(y, lora_reference(m, x.double().float()).detach(), what="compiled forward")
    # a training step through the compiled graph (the backward is traced too)
    xg = x.clone().requires_grad_()
    cm(xg).square().sum().backward()
    gA = m.lora_A["default"].weight.grad.clone()
    m.zero_grad()
    xr = x.clone().requires_grad_()
    lora_reference(m, xr).square().sum().backward()
    close(gA, m.lora_A["default"].weight.grad, what="compiled grad A")
    close(xg.grad, xr.grad, what="compiled grad x")


def test_traced_training_keeps_xa():
    """Under torch.compile a training step traces loraops::lora_forward_xa (the forward that keeps
    x@A.T for the backward) and its gradients match eager's; with lora_b frozen, or in
    inference, it traces the plain loraops::lora_forward."""
    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported on this Python")
    graphs = []

    def recording(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    x, w, a, b = randn(3, 16, seed=95), randn(8, 16, seed=96), randn(4, 16, seed=97), randn(8, 4)

    def step(x, w, a, b):
        return lt.lora_forward(x, w, a, b, 0.5).square().sum()

    leaves = [t.clone().requires_grad_(i != 1) for i, t in enumerate((x, w, a, b))]
    torch.compile(step, fullgraph=True, backend=recording)(*leaves).backward()
    assert "lora_forward_xa" in graphs[-1], graphs[-1]
    ref = [t.clone().requires_grad_(i != 1) for i, t in enumerate((x, w, a, b))]
    step(*ref).backward()
    for i in (0, 2, 3):
        close(leaves[i].grad, ref[i].grad, 1e-5, 1e-5, f"compiled grad {i}")
    frozen_b = [t.clone().requires_grad_(i in (0, 2)) for i, t in enumerate((x, w, a, b))]
    torch._dynamo.reset()
    torch.compile(step, fullgraph=True, backend=recording)(*frozen_b)
    assert "lora_forward_xa" not in graphs[-1] and "lora_forward" in graphs[-1], graphs[-1]


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_cuda_graph_capture_of_lora_linear():
    m = lora_layer("cuda")
    x = randn(4, 32, device="cuda", seed=91)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.no_grad():
        m(x)  # warm-up on a side stream
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        y = m(x)
    x.copy_(randn(4, 32, device="cuda", seed=92))
    graph.replay()
    torch.cuda.synchronize()
    close(y, lora_reference(m, x).detach(), what="graph replay")

    # the custom op itself (the path autograd and torch.compile take)
    w, bias = m.base_layer.weight, m.base_layer.bias
    a, b = m.lora_A["default"].weight.detach(), m.lora_B["default"].weight.detach()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = torch.ops.loraops.lora_forward(x, w, a, b, m.scaling["default"], bias, "auto")
    x.copy_(randn(4, 32, device="cuda", seed=93))
    graph.replay()
    torch.cuda.synchronize()
    close(y, lora_reference(m, x).detach(), what="graph replay of the op")


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_cuda_graphed_training_step_of_lora_linear():
    """torch.cuda.make_graphed_callables captures forward and backward (lora_backward)."""
    m = lora_layer("cuda")
    x = randn(4, 32, device="cuda", seed=94).requires_grad_()
    graphed = torch.cuda.make_graphed_callables(m, (x,))
    m.zero_grad()
    xg = randn(4, 32, device="cuda", seed=95).requires_grad_()
    graphed(xg).square().sum().backward()
    got = [xg.grad.clone(), m.lora_A["default"].weight.grad.clone(),
           m.lora_B["default"].weight.grad.clone()]
    m.zero_grad()
    xr = xg.detach().clone().requires_grad_()
    lora_reference(m, xr).square().sum().backward()
    want = [xr.grad, m.lora_A["default"].weight.grad, m.lora_B["default"].weight.grad]
    for name, g, w in zip(("x", "A", "B"), got, want):
        close(g, w, what=f"graphed grad {name}")


@pytest.mark.parametrize("device", DEVICES)
def test_lora_linear_dtypes_and_dropout(device):
    m = lora_layer(device)
    x = randn(3, 32, device=device, seed=93)
    close(m(x), lora_reference(m, x), what="fp32")
    mb = lora_layer(device, torch.bfloat16)
    xb = x.bfloat16()
    close(mb(xb), lora_reference(mb, xb), rtol=2e-2, atol=2e-2, what="bf16")
    # fp32 adapters on a bf16 base (PEFT's default): computed in bf16, grads reach fp32 params
    mb.lora_A.float()
    mb.lora_B.float()
    y = mb(xb)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert mb.lora_A["default"].weight.grad.dtype == torch.float32
    # autocast: the layer runs in autocast's dtype
    with torch.autocast(device, dtype=torch.bfloat16):
        assert m(x).dtype == torch.bfloat16
    # dropout in training: PEFT's unfused math, same random mask as the reference
    md = lora_layer(device, lora_dropout=0.5)
    md.train()
    torch.manual_seed(1)
    y1 = md(x)
    torch.manual_seed(1)
    close(y1, lora_reference(md, x), what="dropout")
    md.eval()
    close(md(x), lora_reference(md, x), what="dropout in eval")


# ---- PEFT -----------------------------------------------------------------------------------

class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q = torch.nn.Linear(16, 16)
        self.v = torch.nn.Linear(16, 12, bias=False)
        self.out = torch.nn.Linear(12, 4)

    def forward(self, x):
        return self.out(torch.relu(self.q(x))[..., :12] + self.v(x))


def peft_model(**cfg):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"], **cfg)
    model = peft.get_peft_model(Tiny(), config)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    return model


def test_patch_peft_keeps_state_dict_and_unpatch_restores():
    from peft.tuners.lora.layer import Linear

    model = peft_model()
    x = randn(5, 16, seed=100)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    y0 = model(x)
    layers = [m for m in model.modules() if isinstance(m, Linear)]
    dicts = [dict(vars(m)) for m in layers]
    report = lt.patch_peft(model)
    assert report.count == 2 and int(report) == 2 and not report.skipped, str(report)
    assert all(type(m).__name__ == "LoraopsPeftLinear" for m in layers)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    close(model(x), y0, what="patched forward")
    assert lt.patch_peft(model).already == report.patched
    assert lt.unpatch(model) == 2
    assert all(type(m) is Linear for m in layers)
    assert [dict(vars(m)) for m in layers] == dicts
    assert lt.unpatch(model) == 0


def test_patched_peft_trains_like_peft():
    model = peft_model(lora_dropout=0.1)
    ref = copy.deepcopy(model)
    lt.patch_peft(model)
    x = randn(6, 16, seed=101)
    for m in (model, ref):
        m.eval()  # dropout off: the fused path
        m(x).square().sum().backward()
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        assert (p.grad is None) == (q.grad is None), n
        if p.grad is not None:
            close(p.grad, q.grad, what=n)
    for m in (model, ref):
        m.train()  # dropout on: PEFT's own forward, the same random mask
    torch.manual_seed(3)
    y1 = model(x)
    torch.manual_seed(3)
    close(y1, ref(x), what="train mode with dropout")


def test_patched_peft_defers_to_peft_when_not_plain():
    model = peft_model()
    x = randn(5, 16, seed=102)
    y0 = model(x).detach()
    lt.patch_peft(model)
    with model.disable_adapter():
        close(model(x), model.base_model.model.out(
            torch.relu(model.base_model.model.q.base_layer(x))[..., :12]
            + model.base_model.model.v.base_layer(x)), what="disabled adapters")
    model.merge_adapter()
    close(model(x), y0, what="merged after patching")
    model.unmerge_adapter()
    close(model(x), y0, what="unmerged")
    pickle.loads(pickle.dumps(model.base_model.model.q))  # the patched class is picklable


def test_patched_peft_layer_compiles_fullgraph():
    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported on this Python")
    model = peft_model()
    lt.patch_peft(model)
    inner = model.base_model.model
    x = randn(5, 16, seed=104)
    want = inner(x)
    got = torch.compile(inner, fullgraph=True, backend="aot_eager")(x)
    close(got, want, what="compiled patched PEFT model")


def test_patch_peft_skips_what_it_cannot_handle():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = peft.get_peft_model(Tiny(), peft.LoraConfig(r=4, target_modules=["q"], use_dora=True))
    report = lt.patch_peft(model)
    assert report.count == 0 and report.skipped == {"base_model.model.q": "DoRA"}, str(report)
    model = peft_model()
    model.add_adapter("second", peft.LoraConfig(r=2, target_modules=["q"]))
    model.base_model.set_adapter(["default", "second"])
    report = lt.patch_peft(model)
    assert report.skipped == {"base_model.model.q": "2 active adapters"}, str(report)
    assert report.patched == ["base_model.model.v"]
    model = peft_model()
    model.merge_adapter()
    assert set(lt.patch_peft(model).skipped.values()) == {"merged adapters"}


def test_lora_linear_and_peft_state_dicts_interchange():
    model = peft_model()
    layer = model.base_model.model.q
    ours = lt.LoRALinear(16, 16, r=4, lora_alpha=8)
    ours.load_state_dict(layer.state_dict())
    assert list(ours.state_dict()) == list(layer.state_dict())
    x = randn(3, 16, seed=103)
    close(ours(x), layer(x), what="LoRALinear from PEFT's state_dict")
    ours2 = lt.LoRALinear(16, 16, r=4, lora_alpha=8)
    with torch.no_grad():
        ours2.lora_B["default"].weight.normal_()
    layer.load_state_dict(ours2.state_dict())
    close(layer(x), ours2(x), what="PEFT from LoRALinear's state_dict")
    shared = lt.LoRALinear.from_peft(layer)
    close(shared(x), layer(x), what="from_peft")
    assert shared.lora_A["default"].weight is layer.lora_A["default"].weight


def test_tiny_llama_logits_match():
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(input_ids=ids).logits
    report = lt.patch_peft(model)
    assert report.count == 14 and not report.skipped, str(report)
    with torch.no_grad():
        got = model(input_ids=ids).logits
    close(got, want, rtol=1e-4, atol=1e-4, what="llama logits")
    assert lt.unpatch(model) == 14
