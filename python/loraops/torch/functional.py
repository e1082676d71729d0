"""The loraops ops for PyTorch code: differentiable, ``torch.compile``-able, CUDA-graph safe.

Each function checks its plain arguments and calls the ``torch.ops.loraops.<op>`` custom op (see
``_ops``); signatures and semantics are those of the ``loraops`` function of the same name
(docs/contract.md). Inputs must share one dtype and one device.

Where the computation runs:

- forward: loraops' kernel for the device and dtype. With ``impl="auto"`` (the default), PyTorch
  math instead when loraops has none: on CUDA the ops its CUDA backend does not implement yet
  (the table in docs/contract.md), in a build without the CUDA backend every CUDA op, and
  everywhere float64 and devices other than cpu/cuda. A named ``impl`` is never replaced: it
  runs or raises :class:`loraops.UnsupportedError`.
- backward: lora_forward's gradients for x, lora_a and lora_b come from loraops' lora_backward
  (PyTorch math where that has no kernel, as above); every other gradient (bias and a
  trainable weight of lora_forward, and the whole backward of matmul, softmax, rms_norm,
  layer_norm, activation and attention) is PyTorch math, because loraops has no backward kernel
  for it. Half dtypes are computed in float32 there and rounded once.
"""

import torch

from .._args import error, flag, integer, optional_real, real
from . import _dispatch, _math
from . import _ops
from ._ops import call

__all__ = ["activation", "attention", "layer_norm", "lora_backward", "lora_forward", "matmul",
           "rms_norm", "softmax"]


def _tensor(op, arg, v, optional=False):
    if v is None and optional:
        return None
    if not isinstance(v, torch.Tensor):
        raise error(TypeError, op, arg, "a torch.Tensor", type(v).__name__)
    return v


def _shape(op, arg, t, want, why):
    if tuple(t.shape) != tuple(want):
        raise error(ValueError, op, arg, f"shape {list(want)} ({why})", f"shape {list(t.shape)}")


def _eps(op, eps):
    e = real(op, "eps", eps)
    if not e >= 0.0 or e == float("inf"):
        raise error(ValueError, op, "eps", "a finite eps >= 0", repr(eps))
    return e


def matmul(a, b, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, c=None, allow_tf32=False,
           impl="auto"):
    """``alpha * op(a) @ op(b) + beta * c`` (:func:`loraops.matmul`); differentiable in a, b and
    c (backward in PyTorch math)."""
    op = "matmul"
    _dispatch.check_impl(op, impl)
    a, b = _tensor(op, "a", a), _tensor(op, "b", b)
    c = _tensor(op, "c", c, optional=True)
    beta = real(op, "beta", beta)
    if beta != 0.0 and c is None:
        raise error(ValueError, op, "c", "a tensor when beta != 0", "None")
    if a.dim() not in (2, 3) or b.dim() != a.dim():
        raise error(ValueError, op, "b", f"rank {a.dim()} (as a; ranks 2 or 3)",
                    f"rank {b.dim()} with a of rank {a.dim()}")
    ta, tb = flag(op, "trans_a", trans_a), flag(op, "trans_b", trans_b)
    k_a = a.shape[-2] if ta else a.shape[-1]
    k_b = b.shape[-1] if tb else b.shape[-2]
    if k_a != k_b:
        raise error(ValueError, op, "b", f"inner dim {k_a} (op(a)'s last dim)", f"{k_b}")
    return call(_ops.matmul_op, _ops.matmul_impl, a, b, c, ta, tb, real(op, "alpha", alpha),
                beta, flag(op, "allow_tf32", allow_tf32), impl)


def softmax(x, dim=-1, *, impl="auto"):
    """Numerically stable softmax along ``dim`` (:func:`loraops.softmax`; a row of all ``-inf``
    gives zeros); differentiable (backward in PyTorch math, from the saved output)."""
    op = "softmax"
    _dispatch.check_impl(op, impl)
    x = _tensor(op, "x", x)
    d = integer(op, "dim", dim)
    if x.dim() == 0 or not -x.dim() <= d < x.dim():
        raise error(ValueError, op, "dim", f"a dim in [{-x.dim()}, {x.dim()})", str(dim))
    return call(_ops.softmax_op, _ops.softmax_impl, x, d, impl)


def rms_norm(x, weight=None, eps=1e-6, *, impl="auto"):
    """RMS norm over the last dim (:func:`loraops.rms_norm`); differentiable in x and weight
    (backward in PyTorch math, recomputing the row statistics)."""
    op = "rms_norm"
    _dispatch.check_impl(op, impl)
    x = _tensor(op, "x", x)
    weight = _tensor(op, "weight", weight, optional=True)
    if weight is not None and x.dim() >= 1:
        _shape(op, "weight", weight, (x.shape[-1],), "x's last dim")
    return call(_ops.rms_norm_op, _ops.rms_norm_impl, x, weight, _eps(op, eps), impl)


def layer_norm(x, weight=None, bias=None, eps=1e-5, *, impl="auto"):
    """Layer norm over the last dim (:func:`loraops.layer_norm`); differentiable in x, weight and
    bias (backward in PyTorch math, recomputing the row statistics)."""
    op = "layer_norm"
    _dispatch.check_impl(op, impl)
    x = _tensor(op, "x", x)
    weight = _tensor(op, "weight", weight, optional=True)
    bias = _tensor(op, "bias", bias, optional=True)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and x.dim() >= 1:
            _shape(op, name, t, (x.shape[-1],), "x's last dim")
    return call(_ops.layer_norm_op, _ops.layer_norm_impl, x, weight, bias, _eps(op, eps), impl)


def activation(x, kind, *, impl="auto"):
    """Elementwise activation ``kind`` (:func:`loraops.activation`); differentiable (backward in
    PyTorch math)."""
    op = "activation"
    _dispatch.check_impl(op, impl)
    x = _tensor(op, "x", x)
    if not isinstance(kind, str) or kind not in _math._ACTIVATIONS:
        raise error(ValueError, op, "kind", "one of " + ", ".join(_math._ACTIVATIONS), repr(kind))
    return call(_ops.activation_op, _ops.activation_impl, x, kind, impl)


def _check_lora(op, x, weight, lora_a, lora_b):
    if weight.dim() != 2:
        raise error(ValueError, op, "weight", "rank 2 ([N, K])", f"rank {weight.dim()}")
    n, k = weight.shape
    if x.dim() < 1 or x.shape[-1] != k:
        raise error(ValueError, op, "x", f"last dim {k} (weight's K)", f"shape {list(x.shape)}")
    if lora_a.dim() != 2 or lora_a.shape[1] != k:
        raise error(ValueError, op, "lora_a", f"shape [r, {k}]", f"shape {list(lora_a.shape)}")
    _shape(op, "lora_b", lora_b, (n, lora_a.shape[0]), "[N, r]")
    return n, k


def lora_forward(x, weight, lora_a, lora_b, scale, bias=None, *, impl="auto"):
    """``x @ weight.T + bias + scale * (x @ lora_a.T) @ lora_b.T`` (:func:`loraops.lora_forward`),
    differentiable.

    Gradients: x, lora_a and lora_b from ``loraops::lora_backward`` (loraops' kernel; PyTorch math
    where loraops has no lora_backward for the device and dtype, e.g. float64); when lora_b needs
    a gradient the forward keeps ``x @ lora_a.T`` for it (in eager mode and under torch.compile
    alike, the latter through ``loraops::lora_forward_xa``), so the backward does not recompute
    that product; bias: ``grad_y`` summed over the leading dims (PyTorch); weight, when it requires
    grad (it is frozen in LoRA): ``grad_y.T @ x`` (PyTorch).
    """
    op = "lora_forward"
    _dispatch.check_impl(op, impl)
    x, weight = _tensor(op, "x", x), _tensor(op, "weight", weight)
    lora_a, lora_b = _tensor(op, "lora_a", lora_a), _tensor(op, "lora_b", lora_b)
    bias = _tensor(op, "bias", bias, optional=True)
    n, _ = _check_lora(op, x, weight, lora_a, lora_b)
    if bias is not None:
        _shape(op, "bias", bias, (n,), "weight's N")
    args = (x, weight, lora_a, lora_b, real(op, "scale", scale), bias, impl)
    if (torch.is_grad_enabled() and lora_b.requires_grad
            and not _ops._eager([t for t in args if isinstance(t, torch.Tensor)])):
        return _ops.lora_forward_xa_op(*args)[0]  # traced: the op that keeps x@A.T
    return call(_ops.lora_forward_op, _ops.lora_forward_impl, *args)


def lora_backward(grad_y, x, weight, lora_a, lora_b, scale, *, xa=None, impl="auto"):
    """``(grad_x, grad_a, grad_b)`` of :func:`lora_forward` (:func:`loraops.lora_backward`; `xa`,
    the forward's ``x @ lora_a.T``, spares recomputing it); not differentiable itself."""
    op = "lora_backward"
    _dispatch.check_impl(op, impl)
    grad_y, x = _tensor(op, "grad_y", grad_y), _tensor(op, "x", x)
    weight = _tensor(op, "weight", weight)
    lora_a, lora_b = _tensor(op, "lora_a", lora_a), _tensor(op, "lora_b", lora_b)
    n, _ = _check_lora(op, x, weight, lora_a, lora_b)
    _shape(op, "grad_y", grad_y, (*x.shape[:-1], n), "x's leading dims and weight's N")
    xa = _tensor(op, "xa", xa, optional=True)
    if xa is not None:
        _shape(op, "xa", xa, (*x.shape[:-1], lora_a.shape[0]), "x's leading dims and lora_a's r")
    return call(_ops.lora_backward_op, _ops.lora_backward_impl, grad_y, x, weight, lora_a,
                lora_b, real(op, "scale", scale), impl, xa)


def attention(q, k, v, *, causal=False, scale=None, impl="auto"):
    """Scaled dot-product attention (:func:`loraops.attention`: [B, H, S, D] layout, grouped-query
    heads, bottom-right aligned ``causal``, zeros for a query that sees no key); differentiable
    in q, k and v (backward in PyTorch math, recomputing the probabilities: O(Sq*Sk) memory per
    batch and head)."""
    op = "attention"
    _dispatch.check_impl(op, impl)
    q, k, v = _tensor(op, "q", q), _tensor(op, "k", k), _tensor(op, "v", v)
    if q.dim() != 4:
        raise error(ValueError, op, "q", "rank 4 ([B, Hq, Sq, D])", f"rank {q.dim()}")
    if k.dim() != 4 or k.shape[0] != q.shape[0] or k.shape[3] != q.shape[3] or k.shape[1] == 0 \
            or q.shape[1] % k.shape[1] != 0:
        raise error(ValueError, op, "k", f"shape [{q.shape[0]}, Hkv, Sk, {q.shape[3]}] with "
                    f"{q.shape[1]} % Hkv == 0", f"shape {list(k.shape)}")
    _shape(op, "v", v, k.shape, "k's shape")
    s = optional_real(op, "scale", scale)
    if s is not None and not abs(s) < float("inf"):
        raise error(ValueError, op, "scale", "a finite scale", repr(scale))
    return call(_ops.attention_op, _ops.attention_impl, q, k, v, flag(op, "causal", causal), s,
                impl)
