"""Whether a call runs loraops' kernel or the PyTorch math of ``_math``.

With ``impl="auto"`` a call falls back to PyTorch math when loraops has no implementation of the
op for the tensors' device and dtype (``loraops.has_impl(op, device, "auto", dtype)`` is False:
an op the CUDA backend does not have yet, a build without CUDA, float64, a device other than cpu
and cuda), and also when loraops raises :class:`loraops.UnsupportedError` for the call, so a model
never breaks for want of a kernel. A named implementation (``"custom"``, ``"vendor"``,
``"reference"``) is never replaced: loraops runs it or raises its own error.
"""

import collections

import torch

import loraops

from .._args import error

IMPLS = ("auto", "vendor", "custom", "reference")
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
_HAS = {}  # (op, device type, dtype) -> bool; what a build registers never changes at run time
_FALLBACKS = collections.Counter()  # (op, device type, dtype name) -> calls that ran PyTorch math


def fallback_counts(reset=False):
    """How many calls of each ``(op, device type, dtype)`` ran PyTorch math instead of a loraops
    kernel since the start (or the last ``reset=True``), as a dict. Counted when the call runs
    in Python: a CUDA-graph replay adds nothing."""
    out = dict(_FALLBACKS)
    if reset:
        _FALLBACKS.clear()
    return out


def has_kernel(op, t):
    """Whether loraops has any implementation of `op` for tensor `t`'s device and dtype."""
    key = (op, t.device.type, t.dtype)
    ok = _HAS.get(key)
    if ok is None:
        name = _DTYPE_NAMES.get(t.dtype)
        ok = (name is not None and t.device.type in ("cpu", "cuda")
              and loraops.has_impl(op, t.device.type, "auto", name))
        _HAS[key] = ok
    return ok


def check_impl(op, impl):
    if not isinstance(impl, str) or impl not in IMPLS:
        raise error(ValueError, op, "impl", "one of " + ", ".join(IMPLS), repr(impl))


def check_same(op, names, tensors):
    """The checks loraops' core makes, for calls that do not reach it: one dtype, one device,
    floating point."""
    first = tensors[0]
    if not first.is_floating_point():
        raise error(TypeError, op, names[0], "a floating-point tensor", str(first.dtype))
    for name, t in zip(names[1:], tensors[1:]):
        if t is None:
            continue
        if t.dtype != first.dtype:
            raise error(TypeError, op, name, f"dtype {first.dtype} (as {names[0]})", str(t.dtype))
        if t.device != first.device:
            raise error(ValueError, op, name, f"device {first.device} (as {names[0]})",
                        str(t.device))


def run(op, impl, names, tensors, kernel, math):
    """``kernel()`` (loraops) when it can run, else ``math()`` (PyTorch), per the module doc."""
    check_impl(op, impl)
    if impl != "auto":
        return kernel()
    if has_kernel(op, tensors[0]):
        try:
            return kernel()
        except loraops.UnsupportedError:
            pass  # registered, but not for this case (a kernel in progress): PyTorch math
    check_same(op, names, tensors)
    dev = tensors[0].device.type
    _FALLBACKS[(op, dev, str(tensors[0].dtype).replace("torch.", ""))] += 1
    if torch.is_autocast_enabled(dev):  # the math keeps the op's dtype, as loraops' kernels do
        with torch.autocast(dev, enabled=False):
            return math()
    return math()
