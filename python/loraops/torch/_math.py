"""The ops' math in plain PyTorch: the fallback forwards and every backward loraops has no
kernel for.

Each function mirrors the loraops contract (docs/contract.md) exactly, including its edge cases
(a softmax row of all ``-inf`` gives zeros, attention's causal mask is bottom-right aligned and a
query that sees no key gives zeros). Half-precision inputs are computed in float32 and rounded
once at the end, as loraops' kernels accumulate in fp32; float64 stays float64. Results are always
new tensors (never views of an input), as a ``torch.library`` op requires.
"""

import math

import torch

_HALF = (torch.float16, torch.bfloat16)


def acc_dtype(t):
    """The dtype the math runs in: float32 for half types, the tensor's own dtype otherwise."""
    return torch.float32 if t.dtype in _HALF else t.dtype


def _up(t, dtype):
    return None if t is None else t.to(dtype)


# ---- forwards -------------------------------------------------------------------------------

def matmul(a, b, trans_a, trans_b, alpha, beta, c):
    acc = acc_dtype(a)
    oa = a.to(acc).transpose(-1, -2) if trans_a else a.to(acc)
    ob = b.to(acc).transpose(-1, -2) if trans_b else b.to(acc)
    out = torch.matmul(oa, ob) * alpha
    if beta != 0.0:
        out = out + beta * c.to(acc)
    return out.to(a.dtype).contiguous()


def softmax(x, dim):
    y = torch.softmax(x.to(acc_dtype(x)), dim)
    # torch gives NaN for a row of all -inf; the contract gives zeros (a NaN input still gives NaN)
    dead = torch.isneginf(x).all(dim, keepdim=True)
    y = torch.where(dead, torch.zeros((), dtype=y.dtype, device=y.device), y)
    return y.to(x.dtype)


def rms_norm(x, weight, eps):
    xf = x.to(acc_dtype(x))
    y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.to(xf.dtype)
    return y.to(x.dtype)


def layer_norm(x, weight, bias, eps):
    xf = x.to(acc_dtype(x))
    y = torch.nn.functional.layer_norm(xf, (x.shape[-1],), _up(weight, xf.dtype),
                                       _up(bias, xf.dtype), eps)
    return y.to(x.dtype)


_ACTIVATIONS = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "gelu": torch.nn.functional.gelu,
    "gelu_tanh": lambda v: torch.nn.functional.gelu(v, approximate="tanh"),
    "silu": torch.nn.functional.silu,
}


def activation(x, kind):
    return _ACTIVATIONS[kind](x.to(acc_dtype(x))).to(x.dtype)


def lora_forward(x, weight, lora_a, lora_b, scale, bias):
    acc = acc_dtype(x)
    xf = x.to(acc)
    y = torch.matmul(xf, weight.to(acc).t())
    y = y + scale * torch.matmul(torch.matmul(xf, lora_a.to(acc).t()), lora_b.to(acc).t())
    if bias is not None:
        y = y + bias.to(acc)
    return y.to(x.dtype)


def _attention_probs(q, k, causal, scale):
    """softmax(q @ k.T * scale + mask) in q's accumulation dtype, k already expanded to q's heads;
    rows of queries that see no key are zero."""
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    sq, sk = q.shape[-2], k.shape[-2]
    if causal:
        i = torch.arange(sq, device=q.device).unsqueeze(-1)
        j = torch.arange(sk, device=q.device)
        visible = j <= i + (sk - sq)
        s = s.masked_fill(~visible, float("-inf"))
        p = torch.softmax(s, -1)
        return p.masked_fill(~visible.any(-1, keepdim=True), 0.0)
    return torch.softmax(s, -1)  # Sk = 0 gives [..., Sq, 0] probabilities: a zero output


def _expand_heads(t, hq):
    """[B, Hkv, S, D] -> [B, Hq, S, D]: query head h reads key/value head h // (Hq // Hkv)."""
    group = hq // t.shape[1]
    return t if group == 1 else t.repeat_interleave(group, dim=1)


def attention_scale(q, scale):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale


def attention(q, k, v, causal, scale):
    acc = acc_dtype(q)
    hq = q.shape[1]
    kf, vf = _expand_heads(k.to(acc), hq), _expand_heads(v.to(acc), hq)
    p = _attention_probs(q.to(acc), kf, causal, attention_scale(q, scale))
    return torch.matmul(p, vf).to(q.dtype)


# ---- backwards ------------------------------------------------------------------------------

def matmul_backward(g, a, b, trans_a, trans_b, alpha, beta, need):
    """Gradients of ``alpha*op(a)@op(b) + beta*c`` for (a, b, c); None where not needed."""
    acc = acc_dtype(g)
    gf = g.to(acc)
    oa = a.to(acc).transpose(-1, -2) if trans_a else a.to(acc)
    ob = b.to(acc).transpose(-1, -2) if trans_b else b.to(acc)
    ga = gb = gc = None
    if need[0]:
        d = alpha * torch.matmul(gf, ob.transpose(-1, -2))  # d op(a)
        ga = (d.transpose(-1, -2) if trans_a else d).to(a.dtype)
    if need[1]:
        d = alpha * torch.matmul(oa.transpose(-1, -2), gf)  # d op(b)
        gb = (d.transpose(-1, -2) if trans_b else d).to(b.dtype)
    if need[2] and beta != 0.0:
        gc = (beta * gf).to(g.dtype)
    return ga, gb, gc


def softmax_backward(g, y, dim):
    acc = acc_dtype(y)
    gf, yf = g.to(acc), y.to(acc)
    return (yf * (gf - (gf * yf).sum(dim, keepdim=True))).to(y.dtype)


def leading_sum(t, n):
    """Sum of `t` over every dim but the last, as a [n] vector."""
    return t.reshape(-1, n).sum(0)


def rms_norm_backward(g, x, weight, eps, need):
    acc = acc_dtype(x)
    n = x.shape[-1]
    xf, gf = x.to(acc), g.to(acc)
    rstd = torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    xhat = xf * rstd
    gx = gw = None
    gxhat = gf if weight is None else gf * weight.to(acc)
    if need[0]:
        gx = (rstd * (gxhat - xhat * (gxhat * xhat).mean(-1, keepdim=True))).to(x.dtype)
    if need[1] and weight is not None:
        gw = leading_sum(gf * xhat, n).to(weight.dtype)
    return gx, gw


def layer_norm_backward(g, x, weight, eps, need):
    acc = acc_dtype(x)
    n = x.shape[-1]
    xf, gf = x.to(acc), g.to(acc)
    mean = xf.mean(-1, keepdim=True)
    rstd = torch.rsqrt((xf - mean).square().mean(-1, keepdim=True) + eps)
    xhat = (xf - mean) * rstd
    gxhat = gf if weight is None else gf * weight.to(acc)
    gx = gw = gb = None
    if need[0]:
        gx = rstd * (gxhat - gxhat.mean(-1, keepdim=True)
                     - xhat * (gxhat * xhat).mean(-1, keepdim=True))
        gx = gx.to(x.dtype)
    if need[1] and weight is not None:
        gw = leading_sum(gf * xhat, n).to(weight.dtype)
    if need[2]:
        gb = leading_sum(gf, n).to(g.dtype)
    return gx, gw, gb


def activation_backward(g, x, kind):
    acc = acc_dtype(x)
    gf, xf = g.to(acc), x.to(acc)
    aten = torch.ops.aten
    if kind == "relu":
        out = aten.threshold_backward(gf, xf, 0)
    elif kind == "sigmoid":
        out = aten.sigmoid_backward(gf, torch.sigmoid(xf))
    elif kind == "tanh":
        out = aten.tanh_backward(gf, torch.tanh(xf))
    elif kind == "gelu":
        out = aten.gelu_backward(gf, xf)
    elif kind == "gelu_tanh":
        out = aten.gelu_backward(gf, xf, approximate="tanh")
    else:
        out = aten.silu_backward(gf, xf)
    return out.to(x.dtype)


def x_at_a(x, lora_a):
    """x @ lora_a.T in x's dtype (what loraops' lora_forward(return_xa=True) returns)."""
    acc = acc_dtype(x)
    return torch.matmul(x.to(acc), lora_a.to(acc).t()).to(x.dtype)


def lora_backward(g, x, weight, lora_a, lora_b, scale, xa=None):
    """(grad_x, grad_a, grad_b) of lora_forward, as loraops.lora_backward defines them (with `xa`,
    the forward's x@A.T, in place of recomputing it)."""
    acc = acc_dtype(x)
    n, k = weight.shape
    g2 = g.to(acc).reshape(-1, n)
    x2 = x.to(acc).reshape(-1, k)
    a, b = lora_a.to(acc), lora_b.to(acc)
    gb_ = torch.matmul(g2, b)                                    # [M, r]
    gx = torch.matmul(g2, weight.to(acc)) + scale * torch.matmul(gb_, a)
    ga = scale * torch.matmul(gb_.t(), x2)
    t = torch.matmul(x2, a.t()) if xa is None else xa.to(acc).reshape(-1, a.shape[0])
    gb = scale * torch.matmul(g2.t(), t)
    return gx.reshape(x.shape).to(x.dtype), ga.to(x.dtype), gb.to(x.dtype)


def lora_weight_grad(g, x, n, k):
    """d/d weight of ``x @ weight.T``: ``g.T @ x`` over the flattened leading dims."""
    acc = acc_dtype(x)
    return torch.matmul(g.to(acc).reshape(-1, n).t(), x.to(acc).reshape(-1, k)).to(x.dtype)


def attention_backward(g, q, k, v, causal, scale, need):
    """(grad_q, grad_k, grad_v) of attention, recomputing the probabilities (O(Sq*Sk) memory per
    batch and head, as any non-flash attention backward)."""
    acc = acc_dtype(q)
    hq, hkv = q.shape[1], k.shape[1]
    sc = attention_scale(q, scale)
    qf, gf = q.to(acc), g.to(acc)
    kf, vf = _expand_heads(k.to(acc), hq), _expand_heads(v.to(acc), hq)
    p = _attention_probs(qf, kf, causal, sc)
    gq = gk = gv = None

    def fold(t, like):  # sum the query heads that share a key/value head
        b, _, s, d = t.shape
        return t.reshape(b, hkv, hq // hkv, s, d).sum(2).to(like.dtype)

    if need[2]:
        gv = fold(torch.matmul(p.transpose(-1, -2), gf), v)
    if need[0] or need[1]:
        dp = torch.matmul(gf, vf.transpose(-1, -2))
        ds = p * (dp - (dp * p).sum(-1, keepdim=True)) * sc
        if need[0]:
            gq = torch.matmul(ds, kf).to(q.dtype)
        if need[1]:
            gk = fold(torch.matmul(ds.transpose(-1, -2), qf), k)
    return gq, gk, gv
