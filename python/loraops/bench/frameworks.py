"""Inputs and callables for one case: loraops' implementations, and PyTorch eager doing the
same math.

loraops gets numpy arrays on the CPU (its dependency-free path) and torch tensors on CUDA; PyTorch
gets the same values as its own tensors. Inputs are random (zeros would let a kernel skip work or
hit denormal-free fast paths) and scaled like a trained layer's, so half precision neither
overflows nor flushes to zero.
"""

import zlib

import numpy as np

from .suites import LORA_SCALE

RMS_EPS = 1e-6
LN_EPS = 1e-5


def half_dtypes_available():
    """The half dtypes numpy can hold here: bfloat16 needs ml_dtypes."""
    try:
        import ml_dtypes  # noqa: F401
    except ImportError:
        return ("float16",)
    return ("float16", "bfloat16")


def _numpy_dtype(name):
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


def _specs(case):
    """(name, shape, scale, offset) of each input, in the order the op takes them."""
    m, k, n, r, x = case.m, case.k, case.n, case.r, case.x
    if case.op == "attention":
        kv = (x[0], case.hkv, case.sk, x[3])
        return [("q", x, 1.0, 0.0), ("k", kv, 1.0, 0.0), ("v", kv, 1.0, 0.0)]
    if case.op == "softmax" or case.op == "activation":
        return [("x", x, 1.0, 0.0)]
    if case.op == "rms_norm":
        return [("x", x, 1.0, 0.0), ("weight", (x[-1],), 0.1, 1.0)]
    if case.op == "layer_norm":
        return [("x", x, 1.0, 0.0), ("weight", (x[-1],), 0.1, 1.0), ("bias", (x[-1],), 0.1, 0.0)]
    w = [("weight", (n, k), k ** -0.5, 0.0)]
    ab = [("lora_a", (r, k), k ** -0.5, 0.0), ("lora_b", (n, r), max(r, 1) ** -0.5, 0.0)]
    if case.op == "matmul":
        return [("x", x, 1.0, 0.0)] + w
    if case.op == "lora_forward":
        return [("x", x, 1.0, 0.0)] + w + ab
    if case.op == "lora_backward":
        return [("grad_y", (m, n), 1.0, 0.0), ("x", (m, k), 1.0, 0.0)] + w + ab
    raise ValueError(f"no inputs defined for op {case.op!r}")


def _seed(case):
    # Stable across runs and processes (hash() is salted), distinct per case.
    return zlib.crc32(f"{case.op}{case.x}{case.n}{case.r}{case.kind}{case.dtype}"
                      f"{case.sk}{case.hkv}{case.causal}".encode())


def make_inputs(case, device, torch=None):
    """A dict of the op's inputs: numpy arrays on the CPU, torch tensors on CUDA."""
    out = {}
    if device == "cuda":
        gen = torch.Generator(device="cuda").manual_seed(_seed(case))
        dt = getattr(torch, case.dtype)
        for name, shape, scale, offset in _specs(case):
            t = torch.randn(shape, generator=gen, device="cuda", dtype=torch.float32)
            out[name] = t.mul_(scale).add_(offset).to(dt)
        return out
    rng = np.random.default_rng(_seed(case))
    dt = _numpy_dtype(case.dtype)
    for name, shape, scale, offset in _specs(case):
        a = rng.standard_normal(shape, dtype=np.float32) * np.float32(scale) + np.float32(offset)
        out[name] = a.astype(dt)
    return out


def to_torch(inputs, case, torch):
    """PyTorch tensors with the same values (the CUDA inputs already are)."""
    out = {}
    for name, v in inputs.items():
        if isinstance(v, torch.Tensor):
            out[name] = v
        elif case.dtype == "bfloat16":  # torch cannot take ml_dtypes arrays; bf16->f32 is exact
            out[name] = torch.from_numpy(v.astype(np.float32)).to(torch.bfloat16)
        else:
            out[name] = torch.from_numpy(np.ascontiguousarray(v))
    return out


def loraops_call(ops, case, impl, inp):
    """A zero-argument callable running `impl` of the case's op through loraops."""
    s = LORA_SCALE
    op = case.op
    if op == "softmax":
        return lambda: ops.softmax(inp["x"], -1, impl=impl)
    if op == "rms_norm":
        return lambda: ops.rms_norm(inp["x"], inp["weight"], RMS_EPS, impl=impl)
    if op == "layer_norm":
        return lambda: ops.layer_norm(inp["x"], inp["weight"], inp["bias"], LN_EPS, impl=impl)
    if op == "activation":
        return lambda: ops.activation(inp["x"], case.kind, impl=impl)
    if op == "matmul":
        return lambda: ops.matmul(inp["x"], inp["weight"], trans_b=True, impl=impl)
    if op == "lora_forward":
        return lambda: ops.lora_forward(inp["x"], inp["weight"], inp["lora_a"], inp["lora_b"], s,
                                        impl=impl)
    if op == "lora_backward":
        return lambda: ops.lora_backward(inp["grad_y"], inp["x"], inp["weight"], inp["lora_a"],
                                         inp["lora_b"], s, impl=impl)
    if op == "attention":
        return lambda: ops.attention(inp["q"], inp["k"], inp["v"], causal=case.causal, impl=impl)
    raise ValueError(f"no loraops call defined for op {op!r}")


def _torch_rms_norm(torch):
    f = getattr(torch.nn.functional, "rms_norm", None)  # PyTorch >= 2.4
    if f is not None:
        return lambda x, w: f(x, (x.shape[-1],), w, RMS_EPS)
    return lambda x, w: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS) * w


# PyTorch's SDPA backends timed one by one for attention on CUDA (impl "torch.<name>"), beside
# "torch" (SDPA choosing for itself): the bar is the best of them.
SDPA_BACKENDS = ("flash", "efficient", "cudnn")
_SDPA_ENUM = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
              "cudnn": "CUDNN_ATTENTION"}


def _sdpa(torch, case, backend=None):
    """PyTorch's scaled_dot_product_attention for the case (GQA through enable_gqa, or the kv
    heads repeated where this PyTorch predates it); inside sdpa_kernel(backend) when given."""
    F = torch.nn.functional
    causal, group = case.causal, case.x[1] // case.hkv

    def attend(q, k, v):
        try:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                  enable_gqa=group > 1)
        except TypeError:  # PyTorch < 2.5: no enable_gqa
            if group > 1:
                k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    if backend is None:
        return attend
    from torch.nn.attention import SDPBackend, sdpa_kernel

    which = getattr(SDPBackend, _SDPA_ENUM[backend])

    def pinned(q, k, v):
        with sdpa_kernel(which):
            return attend(q, k, v)

    return pinned


def torch_fn(torch, case, backend=None):
    """(f, names): f computes the case's math the way a PyTorch user writes it, from the tensors
    named in `names`, passed positionally in that order. One definition for eager and
    torch.compile, which compiles f itself (tensors as arguments, not captured: one compiled
    graph then serves every rotated copy of the inputs). backend: an SDPA_BACKENDS name, pinned
    for attention."""
    F = torch.nn.functional
    if case.op == "attention":
        return _sdpa(torch, case, backend), ("q", "k", "v")
    s = LORA_SCALE
    op = case.op
    if op == "softmax":
        return (lambda x: torch.softmax(x, dim=-1)), ("x",)
    if op == "rms_norm":
        return _torch_rms_norm(torch), ("x", "weight")
    if op == "layer_norm":
        return ((lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b, LN_EPS)),
                ("x", "weight", "bias"))
    if op == "activation":
        fns = {"silu": F.silu, "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"),
               "gelu": F.gelu, "relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}
        act = fns[case.kind]  # in a Python function: torch.compile wants one, not a builtin
        return (lambda x: act(x)), ("x",)
    if op == "matmul":
        return (lambda x, w: torch.matmul(x, w.T)), ("x", "weight")
    if op == "lora_forward":  # PEFT's eager form
        return ((lambda x, w, a, b: x @ w.T + s * ((x @ a.T) @ b.T)),
                ("x", "weight", "lora_a", "lora_b"))
    if op == "lora_backward":
        def backward(g, x, w, a, b):
            gb_ = g @ b
            return g @ w + s * (gb_ @ a), s * (gb_.T @ x), s * (g.T @ (x @ a.T))

        return backward, ("grad_y", "x", "weight", "lora_a", "lora_b")
    raise ValueError(f"no torch call defined for op {op!r}")


def bind(f, names, t):
    """A zero-argument callable: f on the tensors of `t` named by `names`."""
    args = tuple(t[n] for n in names)
    return lambda: f(*args)


def torch_call(torch, case, t, backend=None):
    """A zero-argument callable doing the case's math in PyTorch eager on the tensors `t` (with
    SDPA `backend` pinned, for attention)."""
    f, names = torch_fn(torch, case, backend)
    return bind(f, names, t)


# torch.compile as a user would ask for a fixed-shape hot path: the default mode (no CUDA graphs
# of its own: the bench's graph replay is the same for every row), the whole function as one
# graph (a graph break raises rather than silently timing half-eager code), static shapes.
COMPILE_OPTIONS = {"mode": "default", "fullgraph": True, "dynamic": False}


def torch_compile(torch, case):
    """(compiled f, names) for the case; compilation itself happens at the first call.

    Dynamo's caches are cleared first: every case compiles the same Python functions at new
    shapes, and past the recompile limit (8 by default) dynamo would quietly run eager code
    under the torch.compile label."""
    f, names = torch_fn(torch, case)
    reset = getattr(getattr(torch, "_dynamo", None), "reset", None)
    if reset is not None:
        reset()
    return torch.compile(f, **COMPILE_OPTIONS), names


def input_bytes(inputs):
    """Bytes of a case's input tensors or arrays."""
    total = 0
    for v in inputs.values():
        if hasattr(v, "element_size"):
            total += v.numel() * v.element_size()
        else:
            total += np.asarray(v).nbytes
    return total


def copies_needed(case_bytes, in_bytes, limit_bytes, cap=1024):
    """How many copies of the inputs to rotate among: 1 when the case's bytes (read + written)
    already reach limit_bytes, else enough (at most `cap`) that one sweep over the copies' inputs
    exceeds it."""
    if not limit_bytes or case_bytes >= limit_bytes or in_bytes <= 0:
        return 1
    return max(2, min(cap, int(limit_bytes // in_bytes) + 1))


def clone_inputs(inputs):
    """Another copy of the inputs (same values, new memory)."""
    return {k: (v.clone() if hasattr(v, "clone") else np.array(v, copy=True))
            for k, v in inputs.items()}
