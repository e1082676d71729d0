"""loraops: the operations LoRA fine-tuning and serving spend their time in.

Every op has a vendor implementation (a BLAS on the CPU; cuBLAS/cuDNN on NVIDIA GPUs), a custom
one (our kernels) and a reference one (plain loops, fp64 accumulation on the CPU), chosen with
``impl=``: ``"auto"`` (default: the faster one measured for this shape), ``"vendor"``,
``"custom"`` or ``"reference"``. Asking for one that does not exist for the op, device and dtype
raises :class:`UnsupportedError`; nothing is silently substituted.

Tensors are any DLPack-capable objects: ``numpy.ndarray`` (float16, float32, and ml_dtypes'
bfloat16), ``torch.Tensor`` (CPU or CUDA), or another framework's CPU tensor. They may be any
strided view. Outputs are new contiguous tensors of the inputs' dtype, framework and device (numpy
arrays for non-numpy, non-torch inputs). CUDA work runs on PyTorch's current stream.

Bad input raises ``ValueError`` (shape, rank, device, unknown impl/kind) or ``TypeError`` (dtype,
not a tensor); the message names the op, the argument, what was expected and what came, and the
exception carries them as ``.op``, ``.argument``, ``.expected`` and ``.got``.
"""

from . import _ext
from ._args import error as _error
from ._args import flag as _flag
from ._args import integer as _integer
from ._args import optional_real as _optional_real
from ._args import real as _real
from ._frameworks import prepare as _prepare

__version__ = _ext.__version__

# The asked-for implementation of an op does not exist for this device and dtype (the message
# says why); a subclass of NotImplementedError, created by the extension so it can raise it.
UnsupportedError = _ext.UnsupportedError

__all__ = [
    "UnsupportedError",
    "activation",
    "attention",
    "built_with_blas",
    "built_with_cuda",
    "has_impl",
    "layer_norm",
    "lora_backward",
    "lora_forward",
    "matmul",
    "rms_norm",
    "softmax",
]

_OPS = ("matmul", "softmax", "rms_norm", "layer_norm", "activation", "lora_forward",
        "lora_backward", "attention")


def matmul(a, b, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, c=None,
           allow_tf32=False, impl="auto"):
    """``alpha * op(a) @ op(b) + beta * c``.

    ``op(a)`` is ``a`` or, with ``trans_a=True``, ``a`` with its last two dims swapped (likewise
    ``b``). ``a`` and ``b`` are 2-D (``op(a)``: [M, K], ``op(b)``: [K, N], out: [M, N]) or both
    3-D with the same batch size ([B, M, K] @ [B, K, N] -> [B, M, N]).

    ``c`` has the output's shape and is read only when ``beta != 0``; ``beta != 0`` without ``c``
    is a ``ValueError``. K = 0 gives ``beta * c`` (or zeros). float32 is computed in true fp32
    unless ``allow_tf32=True`` lets a GPU use TF32 tensor cores; float16/bfloat16 accumulate in
    fp32.
    """
    op = "matmul"
    p = _prepare(op, ("a", "b", "c"), (a, b, c))
    out = _ext.matmul(p.args[0], p.args[1], _flag(op, "trans_a", trans_a),
                      _flag(op, "trans_b", trans_b), _real(op, "alpha", alpha),
                      _real(op, "beta", beta), p.args[2], _flag(op, "allow_tf32", allow_tf32),
                      impl, p.alloc, p.stream, p.bf16)
    return p.finish(out)


def softmax(x, dim=-1, *, impl="auto"):
    """Softmax of ``x`` along ``dim`` (default: the last), numerically stable (the row maximum is
    subtracted before exponentiating).

    A row of all ``-inf`` gives all ``0`` (not NaN); a NaN anywhere in a row makes that row NaN.
    ``x`` has rank >= 1.
    """
    op = "softmax"
    p = _prepare(op, ("x",), (x,))
    return p.finish(_ext.softmax(p.args[0], _integer(op, "dim", dim), impl, p.alloc, p.stream,
                                 p.bf16))


def rms_norm(x, weight=None, eps=1e-6, *, impl="auto"):
    """RMS norm over the last dim: ``x * rsqrt(mean(x**2) + eps) * weight``.

    ``x`` has rank >= 1; ``weight`` (optional) is 1-D of the last dim's size; ``eps >= 0``.
    """
    op = "rms_norm"
    p = _prepare(op, ("x", "weight"), (x, weight))
    return p.finish(_ext.rms_norm(p.args[0], p.args[1], _real(op, "eps", eps), impl, p.alloc,
                                  p.stream, p.bf16))


def layer_norm(x, weight=None, bias=None, eps=1e-5, *, impl="auto"):
    """Layer norm over the last dim: ``(x - mean) / sqrt(var + eps) * weight + bias``.

    The variance is the biased one (divided by the row length), computed by a stable method (no
    ``E[x**2] - E[x]**2``). ``weight`` and ``bias`` (optional) are 1-D of the last dim's size;
    ``eps >= 0``.
    """
    op = "layer_norm"
    p = _prepare(op, ("x", "weight", "bias"), (x, weight, bias))
    return p.finish(_ext.layer_norm(p.args[0], p.args[1], p.args[2], _real(op, "eps", eps), impl,
                                    p.alloc, p.stream, p.bf16))


def activation(x, kind, *, impl="auto"):
    """Elementwise activation ``kind`` of ``x`` (any rank, including 0-d):

    - ``"relu"``: ``max(x, 0)``
    - ``"sigmoid"``: ``1 / (1 + exp(-x))``
    - ``"tanh"``: ``tanh(x)``
    - ``"gelu"``: ``x * 0.5 * (1 + erf(x / sqrt(2)))`` (exact, erf-based)
    - ``"gelu_tanh"``: ``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))``
    - ``"silu"``: ``x * sigmoid(x)``
    """
    op = "activation"
    p = _prepare(op, ("x",), (x,))
    return p.finish(_ext.activation(p.args[0], kind, impl, p.alloc, p.stream, p.bf16))


def lora_forward(x, weight, lora_a, lora_b, scale, bias=None, *, return_xa=False, impl="auto"):
    """A LoRA linear layer: ``x @ weight.T + bias + scale * (x @ lora_a.T) @ lora_b.T``.

    ``x``: [..., K], ``weight``: [N, K], ``lora_a``: [r, K], ``lora_b``: [N, r], ``bias``
    (optional): [N]; the result is [..., N]. Layouts are PyTorch's (``nn.Linear``, PEFT).
    K = 0 or r = 0 are valid (those products are zero).

    With ``return_xa=True`` it returns ``(y, xa)``: ``xa = x @ lora_a.T`` ([..., r], x's dtype,
    unscaled), which the forward computes anyway; keep it and pass it to
    :func:`lora_backward` as ``xa`` to spare the backward that product (a pass over x).
    """
    op = "lora_forward"
    p = _prepare(op, ("x", "weight", "lora_a", "lora_b", "bias"),
                 (x, weight, lora_a, lora_b, bias))
    return p.finish(_ext.lora_forward(p.args[0], p.args[1], p.args[2], p.args[3],
                                      _real(op, "scale", scale), p.args[4],
                                      _flag(op, "return_xa", return_xa), impl, p.alloc,
                                      p.stream, p.bf16))


def lora_backward(grad_y, x, weight, lora_a, lora_b, scale, *, xa=None, impl="auto"):
    """Gradients of :func:`lora_forward` with respect to ``x``, ``lora_a`` and ``lora_b``
    (``weight`` and ``bias`` are frozen). Returns ``(grad_x, grad_a, grad_b)``:

    - ``grad_x = g @ weight + scale * (g @ lora_b) @ lora_a``  (shape of ``x``)
    - ``grad_a = scale * (g @ lora_b).T @ x``                  ([r, K])
    - ``grad_b = scale * g.T @ (x @ lora_a.T)``                ([N, r])

    with ``g = grad_y`` ([..., N], x's leading dims) and ``x`` flattened to 2-D over their
    leading dims. ``xa`` (optional): ``x @ lora_a.T`` as ``lora_forward(..., return_xa=True)``
    gave it ([..., r], x's dtype); used for ``grad_b`` instead of recomputing it. It is not
    checked against x and lora_a: it must be their product.
    """
    op = "lora_backward"
    p = _prepare(op, ("grad_y", "x", "weight", "lora_a", "lora_b", "xa"),
                 (grad_y, x, weight, lora_a, lora_b, xa))
    return p.finish(_ext.lora_backward(p.args[0], p.args[1], p.args[2], p.args[3], p.args[4],
                                       _real(op, "scale", scale), p.args[5], impl, p.alloc,
                                       p.stream, p.bf16))


def attention(q, k, v, *, causal=False, scale=None, impl="auto"):
    """Scaled dot-product attention: ``softmax(q @ k.T * scale + mask) @ v`` per batch and head.

    ``q``: [B, Hq, Sq, D], ``k`` and ``v``: [B, Hkv, Sk, D] with ``Hq % Hkv == 0`` (grouped-query
    and multi-query attention: query head h uses key/value head ``h // (Hq // Hkv)``); the result
    is [B, Hq, Sq, D]. ``scale`` defaults to ``1 / sqrt(D)``.

    ``causal=True`` is bottom-right aligned: query i sees keys ``j <= i + Sk - Sq`` (as in
    FlashAttention; PyTorch's ``is_causal`` when Sq == Sk). A query that sees no key (fully
    masked, or Sk = 0) gives a row of zeros.
    """
    op = "attention"
    p = _prepare(op, ("q", "k", "v"), (q, k, v))
    return p.finish(_ext.attention(p.args[0], p.args[1], p.args[2], _flag(op, "causal", causal),
                                   _optional_real(op, "scale", scale), impl, p.alloc, p.stream,
                                   p.bf16))


def _name_of(v, what):
    """'float32' from 'float32', numpy.float32, numpy.dtype('float32'), torch.float32."""
    if isinstance(v, str):
        return v
    name = getattr(v, "name", None) or getattr(v, "__name__", None)
    if isinstance(name, str):
        return name
    s = str(v)
    if s.startswith("torch.") and what == "dtype":
        return s[len("torch."):]
    return s  # torch.device('cuda', 0) -> 'cuda:0'


def has_impl(op, device="cpu", impl="auto", dtype="float32"):
    """Whether implementation ``impl`` of ``op`` exists in this build for ``device`` (``"cpu"``,
    ``"cuda"``, ``"cuda:N"`` or a ``torch.device``) and ``dtype`` (a name or a numpy/torch dtype).
    ``impl="auto"`` asks whether any implementation exists.

    ``op`` is one of the op function names (``"matmul"``, ``"softmax"``, ...); an unknown one is a
    ``ValueError``. A ``True`` says the implementation is registered, not that a GPU is present.
    """
    if op not in _OPS:
        raise _error(ValueError, "has_impl", "op", "one of " + ", ".join(_OPS), repr(op))
    ok, _why = _ext.has_impl(op, _name_of(device, "device"), impl, _name_of(dtype, "dtype"))
    return ok


def built_with_cuda():
    """Whether this build of loraops has its CUDA backend (true even when no GPU is present)."""
    return _ext.built_with_cuda()


def built_with_blas():
    """Whether this build of loraops has a BLAS for the CPU vendor path."""
    return _ext.built_with_blas()
