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
    return zlib.crc32(f"{case.op}{case.x}{case.n}{case.r}{case.kind}{case.dtype}".encode())


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
    raise ValueError(f"no loraops call defined for op {op!r}")


def _torch_rms_norm(torch, x, w):
    f = getattr(torch.nn.functional, "rms_norm", None)  # PyTorch >= 2.4
    if f is not None:
        return lambda: f(x, (x.shape[-1],), w, RMS_EPS)
    return lambda: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS) * w


def torch_call(torch, case, t):
    """A zero-argument callable doing the case's math the way a PyTorch user writes it."""
    F = torch.nn.functional
    s = LORA_SCALE
    op = case.op
    if op == "softmax":
        return lambda: torch.softmax(t["x"], dim=-1)
    if op == "rms_norm":
        return _torch_rms_norm(torch, t["x"], t["weight"])
    if op == "layer_norm":
        x = t["x"]
        return lambda: F.layer_norm(x, (x.shape[-1],), t["weight"], t["bias"], LN_EPS)
    if op == "activation":
        fns = {"silu": F.silu, "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"),
               "gelu": F.gelu, "relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}
        f = fns[case.kind]
        return lambda: f(t["x"])
    x, w = t["x"], t["weight"]
    if op == "matmul":
        return lambda: torch.matmul(x, w.T)
    a, b = t["lora_a"], t["lora_b"]
    if op == "lora_forward":  # PEFT's eager form
        return lambda: x @ w.T + s * ((x @ a.T) @ b.T)
    if op == "lora_backward":
        g = t["grad_y"]

        def backward():
            gb_ = g @ b
            return g @ w + s * (gb_ @ a), s * (gb_.T @ x), s * (g.T @ (x @ a.T))

        return backward
    raise ValueError(f"no torch call defined for op {op!r}")
