"""Independent float64 references of every op, in plain numpy, written from the contract.

These are the tests' oracle alongside loraops' own impl="reference"; they share no code with it.
"""

import math

import numpy as np


def _f64(a):
    return None if a is None else np.asarray(a).astype(np.float64)


def softmax(x, dim=-1):
    x = _f64(x)
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(x, axis=dim, keepdims=True)  # NaN-propagating
        m = np.where(np.isneginf(m), 0.0, m)  # an all -inf row: exp(-inf) = 0 everywhere
        e = np.exp(x - m)
        s = np.sum(e, axis=dim, keepdims=True)
        out = e / s
    return np.where(s == 0.0, 0.0, out)  # the all -inf row gives 0, not 0/0


def rms_norm(x, weight=None, eps=1e-6):
    x = _f64(x)
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y if weight is None else y * _f64(weight)


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    x = _f64(x)
    mean = np.mean(x, axis=-1, keepdims=True)
    var = np.mean((x - mean) ** 2, axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * _f64(weight)
    if bias is not None:
        y = y + _f64(bias)
    return y


_erf = np.frompyfunc(math.erf, 1, 1)


def activation(x, kind):
    x = _f64(x)
    with np.errstate(over="ignore"):
        if kind == "relu":
            return np.maximum(x, 0.0)
        if kind == "sigmoid":
            return 1.0 / (1.0 + np.exp(-x))
        if kind == "tanh":
            return np.tanh(x)
        if kind == "gelu":
            return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))
        if kind == "gelu_tanh":
            return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
        if kind == "silu":
            return x / (1.0 + np.exp(-x))
    raise ValueError(kind)


def _op(t, trans):
    return np.swapaxes(t, -1, -2) if trans else t


def matmul(a, b, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, c=None, absolute=False):
    """alpha*op(a)@op(b) + beta*c; with absolute=True the same over absolute values (the scale
    the rounding error is relative to)."""
    a, b, c = _f64(a), _f64(b), _f64(c)
    f = np.abs if absolute else (lambda v: v)
    out = f(alpha) * (f(_op(a, trans_a)) @ f(_op(b, trans_b)))
    if beta != 0.0:
        out = out + f(beta) * f(c)
    return out


def lora_forward(x, weight, lora_a, lora_b, scale, bias=None, absolute=False):
    """Returns (y, the LoRA branch) -- the branch is what an implementation may round."""
    x, w, a, b, bias = _f64(x), _f64(weight), _f64(lora_a), _f64(lora_b), _f64(bias)
    f = np.abs if absolute else (lambda v: v)
    lora = f(scale) * ((f(x) @ f(a).T) @ f(b).T)
    y = f(x) @ f(w).T + lora
    if bias is not None:
        y = y + f(bias)
    return y, lora


def lora_backward(grad_y, x, weight, lora_a, lora_b, scale, absolute=False):
    """(grad_x, grad_a, grad_b), from the definitions of the gradients of lora_forward."""
    g, x, w, a, b = _f64(grad_y), _f64(x), _f64(weight), _f64(lora_a), _f64(lora_b)
    f = np.abs if absolute else (lambda v: v)
    m = int(np.prod(x.shape[:-1]))  # explicit: reshape(-1, 0) cannot infer M
    g2 = f(g).reshape(m, g.shape[-1])
    x2 = f(x).reshape(m, x.shape[-1])
    gb = g2 @ f(b)  # [M, r]
    grad_x = (g2 @ f(w) + f(scale) * gb @ f(a)).reshape(x.shape)
    grad_a = f(scale) * gb.T @ x2
    grad_b = f(scale) * g2.T @ (x2 @ f(a).T)
    return grad_x, grad_a, grad_b


def attention(q, k, v, causal=False, scale=None, absolute=False):
    """Returns (out, |P| @ |v|): the second is the scale of the output's rounding error."""
    q, k, v = _f64(q), _f64(k), _f64(v)
    bsz, hq, sq, d = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    if scale is None:
        scale = 1.0 / math.sqrt(d) if d > 0 else 1.0
    out = np.zeros((bsz, hq, sq, d))
    mag = np.zeros((bsz, hq, sq, d))
    group = hq // hkv if hkv else 1
    for bi in range(bsz):
        for h in range(hq):
            kh, vh = k[bi, h // group], v[bi, h // group]
            s = scale * (q[bi, h] @ kh.T)  # [sq, sk]
            if causal:
                i = np.arange(sq)[:, None]
                j = np.arange(sk)[None, :]
                s = np.where(j <= i + sk - sq, s, -np.inf)
            p = softmax(s, -1) if sk > 0 else np.zeros((sq, 0))
            out[bi, h] = p @ vh
            mag[bi, h] = p @ np.abs(vh)
    return out, mag
