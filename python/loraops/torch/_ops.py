"""The loraops ops as ``torch.library`` custom ops (namespace ``loraops``), with fake (meta)
implementations for ``torch.compile`` and autograd formulas.

Each op's real implementation calls the ``loraops`` function of the same name, which takes the
tensors through DLPack, returns a new tensor on their device and runs CUDA work on torch's current
stream (so CUDA-graph capture works). With ``impl="auto"`` it falls back to the PyTorch math of
``_math`` when loraops has no kernel for the device and dtype (see ``_dispatch``).

Backwards (``register_autograd``):

- lora_forward: ``loraops::lora_backward`` for x, lora_a and lora_b (itself PyTorch math where
  loraops has no lora_backward kernel for the device), given the forward's x@A.T where it kept
  it (the eager Function, and ``loraops::lora_forward_xa``, which functional.lora_forward
  traces when lora_b needs a gradient); bias: ``grad_y`` summed over rows; weight
  (frozen in LoRA; only if it requires grad): ``grad_y.T @ x`` in PyTorch;
- matmul, softmax, rms_norm, layer_norm, activation, attention: PyTorch math (loraops has no
  backward kernels for them); rms_norm, layer_norm and attention recompute their statistics or
  probabilities from the saved inputs, softmax uses its saved output.

Backwards are not themselves differentiable (no double backward).

In eager mode (nothing tracing, no functorch transform or dispatch mode, plain tensors)
:func:`call` skips torch's dispatcher, whose Python custom-op path costs ~100 µs a call with
autograd (measured on the CPU: lora_forward 130 µs through the op, 24 µs without): inference
runs the implementation directly, and a call autograd must record runs a
``torch.autograd.Function`` built from the same setup and backward functions as the op's
``register_autograd``. The results are the same either way, and so are the gradients except
lora_b's: the eager forward keeps x@A.T for the backward, rounded to the input dtype (as
PyTorch's own autograd keeps lora_A(x)), where the op's backward recomputes it.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

import loraops

from . import _dispatch, _math

_lib = "loraops::"


def _op(name, impl):
    """Registers `impl` (type-annotated) as custom op ``loraops::<name>``."""
    return torch.library.custom_op(_lib + name, impl, mutates_args=())


_PLAIN = (Tensor, torch.nn.Parameter)


def _eager(tensors):
    """Whether a call can skip torch's dispatcher: eager mode (not traced by torch.compile, no
    functorch transform or TorchDispatchMode active) and plain tensors."""
    if (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()
            or _get_current_dispatch_mode() is not None):
        return False
    return all(type(t) in _PLAIN for t in tensors)


_FUNCTIONS = {}  # custom op -> its eager torch.autograd.Function (see _autograd)


def call(op, impl, *args):
    """``op(*args)`` (the custom op), or the same computation without the dispatcher where that
    is the same thing (see the module doc): ``impl(*args)`` when autograd has nothing to record,
    the op's eager ``autograd.Function`` when it has."""
    tensors = [a for a in args if isinstance(a, Tensor)]
    if not _eager(tensors):
        return op(*args)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        fn = _FUNCTIONS.get(op)
        return op(*args) if fn is None else fn.apply(*args)
    return impl(*args)


def _autograd(op, impl, backward, setup, forward=None):
    """Registers `backward`/`setup` as `op`'s autograd formula and builds the eager
    ``autograd.Function`` that runs `impl` with the same formula (or `forward(ctx, *args)`, which
    must save what `backward` reads). Its forward takes ``ctx`` itself and calls `setup`: a
    Function with a separate ``setup_context`` binds its arguments through ``inspect.signature``
    on every call (~50 µs)."""
    op.register_autograd(backward, setup_context=setup)

    if forward is None:
        def forward(ctx, *args):
            out = impl(*args)
            setup(ctx, args, out)
            return out

    _FUNCTIONS[op] = type(op._name.split("::")[-1] + "_eager", (torch.autograd.Function,), {
        "forward": staticmethod(forward), "backward": staticmethod(backward)})


# ---- matmul ---------------------------------------------------------------------------------

def matmul_impl(a: Tensor, b: Tensor, c: Optional[Tensor], trans_a: bool, trans_b: bool,
                alpha: float, beta: float, allow_tf32: bool, impl: str) -> Tensor:
    return _dispatch.run(
        "matmul", impl, ("a", "b", "c"), (a, b, c),
        lambda: loraops.matmul(a, b, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta,
                               c=c, allow_tf32=allow_tf32, impl=impl),
        lambda: _math.matmul(a, b, trans_a, trans_b, alpha, beta, c))


matmul_op = _op("matmul", matmul_impl)


@matmul_op.register_fake
def _(a, b, c, trans_a, trans_b, alpha, beta, allow_tf32, impl):
    m = a.shape[-1] if trans_a else a.shape[-2]
    n = b.shape[-2] if trans_b else b.shape[-1]
    return a.new_empty((*a.shape[:-2], m, n))


def _matmul_setup(ctx, inputs, output):
    a, b, c, trans_a, trans_b, alpha, beta, _tf32, _impl = inputs
    ctx.save_for_backward(a, b)
    ctx.args = (trans_a, trans_b, alpha, beta)


def _matmul_backward(ctx, g):
    a, b = ctx.saved_tensors
    ga, gb, gc = _math.matmul_backward(g, a, b, *ctx.args, ctx.needs_input_grad[:3])
    return ga, gb, gc, None, None, None, None, None, None


_autograd(matmul_op, matmul_impl, _matmul_backward, _matmul_setup)


# ---- softmax --------------------------------------------------------------------------------

def softmax_impl(x: Tensor, dim: int, impl: str) -> Tensor:
    return _dispatch.run("softmax", impl, ("x",), (x,),
                         lambda: loraops.softmax(x, dim, impl=impl),
                         lambda: _math.softmax(x, dim))


softmax_op = _op("softmax", softmax_impl)


@softmax_op.register_fake
def _(x, dim, impl):
    return x.new_empty(x.shape)


def _softmax_setup(ctx, inputs, output):
    ctx.save_for_backward(output)
    ctx.dim = inputs[1]


def _softmax_backward(ctx, g):
    (y,) = ctx.saved_tensors
    return _math.softmax_backward(g, y, ctx.dim), None, None


_autograd(softmax_op, softmax_impl, _softmax_backward, _softmax_setup)


# ---- rms_norm -------------------------------------------------------------------------------

def rms_norm_impl(x: Tensor, weight: Optional[Tensor], eps: float, impl: str) -> Tensor:
    return _dispatch.run("rms_norm", impl, ("x", "weight"), (x, weight),
                         lambda: loraops.rms_norm(x, weight, eps, impl=impl),
                         lambda: _math.rms_norm(x, weight, eps))


rms_norm_op = _op("rms_norm", rms_norm_impl)


@rms_norm_op.register_fake
def _(x, weight, eps, impl):
    return x.new_empty(x.shape)


def _rms_norm_setup(ctx, inputs, output):
    x, weight, eps, _impl = inputs
    ctx.save_for_backward(x, weight)
    ctx.eps = eps


def _rms_norm_backward(ctx, g):
    x, weight = ctx.saved_tensors
    gx, gw = _math.rms_norm_backward(g, x, weight, ctx.eps, ctx.needs_input_grad[:2])
    return gx, gw, None, None


_autograd(rms_norm_op, rms_norm_impl, _rms_norm_backward, _rms_norm_setup)


# ---- layer_norm -----------------------------------------------------------------------------

def layer_norm_impl(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                    impl: str) -> Tensor:
    return _dispatch.run("layer_norm", impl, ("x", "weight", "bias"), (x, weight, bias),
                         lambda: loraops.layer_norm(x, weight, bias, eps, impl=impl),
                         lambda: _math.layer_norm(x, weight, bias, eps))


layer_norm_op = _op("layer_norm", layer_norm_impl)


@layer_norm_op.register_fake
def _(x, weight, bias, eps, impl):
    return x.new_empty(x.shape)


def _layer_norm_setup(ctx, inputs, output):
    x, weight, _bias, eps, _impl = inputs
    ctx.save_for_backward(x, weight)
    ctx.eps = eps


def _layer_norm_backward(ctx, g):
    x, weight = ctx.saved_tensors
    gx, gw, gb = _math.layer_norm_backward(g, x, weight, ctx.eps, ctx.needs_input_grad[:3])
    return gx, gw, gb, None, None


_autograd(layer_norm_op, layer_norm_impl, _layer_norm_backward, _layer_norm_setup)


# ---- activation -----------------------------------------------------------------------------

def activation_impl(x: Tensor, kind: str, impl: str) -> Tensor:
    return _dispatch.run("activation", impl, ("x",), (x,),
                         lambda: loraops.activation(x, kind, impl=impl),
                         lambda: _math.activation(x, kind))


activation_op = _op("activation", activation_impl)


@activation_op.register_fake
def _(x, kind, impl):
    return x.new_empty(x.shape)


def _activation_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.kind = inputs[1]


def _activation_backward(ctx, g):
    (x,) = ctx.saved_tensors
    return _math.activation_backward(g, x, ctx.kind), None, None


_autograd(activation_op, activation_impl, _activation_backward, _activation_setup)


# ---- lora_forward / lora_backward -----------------------------------------------------------

def _lora_forward_run(x, weight, lora_a, lora_b, scale, bias, impl, return_xa):
    """y, or (y, xa) with return_xa (xa from PyTorch math too where that ran instead of
    loraops)."""
    def math():
        y = _math.lora_forward(x, weight, lora_a, lora_b, scale, bias)
        return (y, _math.x_at_a(x, lora_a)) if return_xa else y

    return _dispatch.run(
        "lora_forward", impl, ("x", "weight", "lora_a", "lora_b", "bias"),
        (x, weight, lora_a, lora_b, bias),
        lambda: loraops.lora_forward(x, weight, lora_a, lora_b, scale, bias, return_xa=return_xa,
                                     impl=impl),
        math)


def lora_forward_impl(x: Tensor, weight: Tensor, lora_a: Tensor, lora_b: Tensor, scale: float,
                      bias: Optional[Tensor], impl: str) -> Tensor:
    return _lora_forward_run(x, weight, lora_a, lora_b, scale, bias, impl, False)


lora_forward_op = _op("lora_forward", lora_forward_impl)


@lora_forward_op.register_fake
def _(x, weight, lora_a, lora_b, scale, bias, impl):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def lora_backward_impl(grad_y: Tensor, x: Tensor, weight: Tensor, lora_a: Tensor,
                       lora_b: Tensor, scale: float, impl: str,
                       xa: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    return _dispatch.run(
        "lora_backward", impl, ("grad_y", "x", "weight", "lora_a", "lora_b", "xa"),
        (grad_y, x, weight, lora_a, lora_b, xa),
        lambda: loraops.lora_backward(grad_y, x, weight, lora_a, lora_b, scale, xa=xa, impl=impl),
        lambda: _math.lora_backward(grad_y, x, weight, lora_a, lora_b, scale, xa))


lora_backward_op = _op("lora_backward", lora_backward_impl)


@lora_backward_op.register_fake
def _(grad_y, x, weight, lora_a, lora_b, scale, impl, xa=None):
    return x.new_empty(x.shape), x.new_empty(lora_a.shape), x.new_empty(lora_b.shape)


def _lora_setup(ctx, inputs, output, xa=None):
    x, weight, lora_a, lora_b, scale, bias, impl = inputs
    ctx.save_for_backward(x, weight, lora_a, lora_b, xa)
    ctx.scale, ctx.impl = scale, impl


def _lora_backward(ctx, g):
    x, weight, lora_a, lora_b, xa = ctx.saved_tensors
    need = ctx.needs_input_grad
    n, k = weight.shape
    gx = gw = ga = gb = gbias = None
    if need[0] or need[2] or need[3]:
        gx, ga, gb = call(lora_backward_op, lora_backward_impl, g, x, weight, lora_a, lora_b,
                          ctx.scale, ctx.impl, xa)
    if need[1]:
        gw = _math.lora_weight_grad(g, x, n, k)
    if need[5]:
        gbias = _math.leading_sum(g.to(_math.acc_dtype(g)), n).to(g.dtype)
    return (gx if need[0] else None, gw, ga if need[2] else None, gb if need[3] else None, None,
            gbias, None)


def _lora_forward_keeping_xa(ctx, x, weight, lora_a, lora_b, scale, bias, impl):
    """The eager Function's forward: when lora_b needs a gradient, loraops' kernel with
    return_xa, so the backward reads the forward's x@A.T instead of recomputing it (the custom
    op, traced by torch.compile, does not return it and its backward recomputes it)."""
    if ctx.needs_input_grad[3]:
        y, xa = _lora_forward_run(x, weight, lora_a, lora_b, scale, bias, impl, True)
    else:
        y, xa = _lora_forward_run(x, weight, lora_a, lora_b, scale, bias, impl, False), None
    _lora_setup(ctx, (x, weight, lora_a, lora_b, scale, bias, impl), y, xa)
    return y


_autograd(lora_forward_op, lora_forward_impl, _lora_backward, _lora_setup,
          _lora_forward_keeping_xa)


# The traced counterpart (torch.compile, functorch): lora_forward that also returns x@A.T, which
# its autograd saves for the backward; functional.lora_forward calls it in place of
# lora_forward when tracing with lora_b's gradient wanted, and returns y alone.

def lora_forward_xa_impl(x: Tensor, weight: Tensor, lora_a: Tensor, lora_b: Tensor, scale: float,
                         bias: Optional[Tensor], impl: str) -> Tuple[Tensor, Tensor]:
    return _lora_forward_run(x, weight, lora_a, lora_b, scale, bias, impl, True)


lora_forward_xa_op = _op("lora_forward_xa", lora_forward_xa_impl)


@lora_forward_xa_op.register_fake
def _(x, weight, lora_a, lora_b, scale, bias, impl):
    return (x.new_empty((*x.shape[:-1], weight.shape[0])),
            x.new_empty((*x.shape[:-1], lora_a.shape[0])))


def _lora_xa_setup(ctx, inputs, output):
    y, xa = output
    ctx.mark_non_differentiable(xa)
    _lora_setup(ctx, inputs, y, xa)


def _lora_xa_backward(ctx, g, _g_xa):
    return _lora_backward(ctx, g)


lora_forward_xa_op.register_autograd(_lora_xa_backward, setup_context=_lora_xa_setup)


# ---- attention ------------------------------------------------------------------------------

def attention_impl(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: Optional[float],
                   impl: str) -> Tensor:
    return _dispatch.run("attention", impl, ("q", "k", "v"), (q, k, v),
                         lambda: loraops.attention(q, k, v, causal=causal, scale=scale,
                                                   impl=impl),
                         lambda: _math.attention(q, k, v, causal, scale))


attention_op = _op("attention", attention_impl)


@attention_op.register_fake
def _(q, k, v, causal, scale, impl):
    return q.new_empty(q.shape)


def _attention_setup(ctx, inputs, output):
    q, k, v, causal, scale, _impl = inputs
    ctx.save_for_backward(q, k, v)
    ctx.causal, ctx.scale = causal, scale


def _attention_backward(ctx, g):
    q, k, v = ctx.saved_tensors
    gq, gk, gv = _math.attention_backward(g, q, k, v, ctx.causal, ctx.scale,
                                          ctx.needs_input_grad[:3])
    return gq, gk, gv, None, None, None


_autograd(attention_op, attention_impl, _attention_backward, _attention_setup)
