"""A LoRA linear layer through loraops: the :func:`lora_linear` function and the
:class:`LoRALinear` module, a drop-in for PEFT's ``peft.tuners.lora.layer.Linear``."""

import math

import torch
from torch import nn
from torch.nn import functional as F

from .._args import error
from . import functional as LF
from ._dispatch import check_impl


def dropout_active(dropout):
    """Whether module `dropout` (PEFT's ``lora_dropout[adapter]``, or None) changes its input now:
    an ``nn.Dropout`` with ``p > 0`` in training mode, or any module other than ``nn.Identity`` and
    ``nn.Dropout``."""
    if dropout is None or isinstance(dropout, nn.Identity):
        return False
    if isinstance(dropout, nn.Dropout):
        return dropout.training and dropout.p > 0
    return True


def autocast_dtype(x):
    """Autocast's dtype for x's device when autocast is on there (and x is floating), else None."""
    dev = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return None


def lora_linear(x, weight, bias, lora_a, lora_b, scale, dropout=None, *, impl="auto"):
    """PEFT's LoRA linear: ``F.linear(x, weight, bias) + scale * lora_b(lora_a(dropout(x)))``.

    Fused (one ``loraops::lora_forward`` call, whose backward is ``loraops::lora_backward``) unless
    `dropout` is active (see :func:`dropout_active`): PEFT applies dropout to the LoRA branch's
    input only, so base and LoRA products see different inputs and cannot share one fused call;
    then the layer runs unfused in PyTorch, exactly as PEFT does.

    Dtypes: the fused call computes in autocast's dtype when autocast is on, else in x's; the
    weights are cast to it (differentiably: fp32 LoRA weights under a bf16 model, PEFT's default,
    get fp32 gradients). PEFT instead runs the LoRA branch in the LoRA weights' dtype and adds it
    to the base output, so with fp32 adapters on a bf16 model the two differ by bf16 rounding.
    Without autocast, x's dtype must equal weight's (as for ``nn.Linear``; the unfused path raises
    PyTorch's error otherwise).
    """
    if dropout_active(dropout):
        return _unfused(x, weight, bias, lora_a, lora_b, scale, dropout)
    dt = autocast_dtype(x)
    if dt is None:
        if weight.dtype != x.dtype:
            return _unfused(x, weight, bias, lora_a, lora_b, scale, dropout)
        dt = x.dtype
    return LF.lora_forward(x.to(dt), weight.to(dt), lora_a.to(dt), lora_b.to(dt), scale,
                           None if bias is None else bias.to(dt), impl=impl)


def _unfused(x, weight, bias, lora_a, lora_b, scale, dropout):
    result = F.linear(x, weight, bias)
    xa = x.to(lora_a.dtype)
    if dropout is not None:
        xa = dropout(xa)
    return (result + F.linear(F.linear(xa, lora_a), lora_b) * scale).to(result.dtype)


class LoRALinear(nn.Module):
    """``base_layer(x) + scaling * lora_B(lora_A(lora_dropout(x)))`` through loraops.

    Parameters and ``state_dict`` keys are PEFT's (``peft.tuners.lora.layer.Linear``) for one
    adapter: ``base_layer.weight`` [N, K] and ``base_layer.bias`` [N] (frozen),
    ``lora_A.<adapter>.weight`` [r, K], ``lora_B.<adapter>.weight`` [N, r]; a PEFT layer's state
    dict loads into this module and this module's into a PEFT layer. ``scaling[adapter]`` is
    ``lora_alpha / r`` (``lora_alpha / sqrt(r)`` with ``use_rslora``). ``r``, ``lora_alpha`` and
    ``scaling`` are dicts keyed by adapter name, as in PEFT.

    The forward is :func:`lora_linear`: one fused ``loraops::lora_forward`` call, except while
    dropout is active (``lora_dropout > 0`` in training mode), when it runs PEFT's unfused math in
    PyTorch. A is initialised as ``nn.Linear``'s weight (Kaiming-uniform), B as zeros, so a new
    layer equals its base layer.
    """

    def __init__(self, in_features, out_features, r=8, lora_alpha=8, lora_dropout=0.0, bias=True,
                 *, adapter_name="default", use_rslora=False, impl="auto", device=None,
                 dtype=None):
        super().__init__()
        base = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._setup(base, r, lora_alpha, lora_dropout, adapter_name, use_rslora, impl)

    @classmethod
    def from_linear(cls, linear, r=8, lora_alpha=8, lora_dropout=0.0, *, adapter_name="default",
                    use_rslora=False, impl="auto"):
        """A LoRA layer around the existing ``nn.Linear`` `linear` (shared, and frozen)."""
        if not isinstance(linear, nn.Linear):
            raise error(TypeError, "LoRALinear.from_linear", "linear", "a torch.nn.Linear",
                        type(linear).__name__)
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._setup(linear, r, lora_alpha, lora_dropout, adapter_name, use_rslora, impl)
        return self

    @classmethod
    def from_peft(cls, layer, *, impl="auto"):
        """A LoRA layer sharing the parameters of PEFT LoRA Linear `layer`'s active adapter (its
        base layer, lora_A, lora_B and dropout modules: training one trains the other)."""
        adapters = layer.active_adapters
        if len(adapters) != 1:
            raise error(ValueError, "LoRALinear.from_peft", "layer", "one active adapter",
                        f"{len(adapters)}: {adapters}")
        name = adapters[0]
        if not isinstance(layer.base_layer, nn.Linear):
            raise error(TypeError, "LoRALinear.from_peft", "layer", "a base layer of type "
                        "torch.nn.Linear", type(layer.base_layer).__name__)
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        check_impl("LoRALinear", impl)
        self.base_layer = layer.base_layer
        self.lora_A = nn.ModuleDict({name: layer.lora_A[name]})
        self.lora_B = nn.ModuleDict({name: layer.lora_B[name]})
        self.lora_dropout = nn.ModuleDict({name: layer.lora_dropout[name]})
        self.r = {name: layer.r[name]}
        self.lora_alpha = {name: layer.lora_alpha[name]}
        self.scaling = {name: layer.scaling[name]}
        self.adapter_name, self.impl = name, impl
        self.in_features, self.out_features = layer.in_features, layer.out_features
        return self

    def _setup(self, base, r, lora_alpha, lora_dropout, adapter_name, use_rslora, impl):
        op = "LoRALinear"
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise error(ValueError, op, "r", "a positive int", repr(r))
        if not isinstance(lora_dropout, (int, float)) or not 0.0 <= lora_dropout < 1.0:
            raise error(ValueError, op, "lora_dropout", "a probability in [0, 1)",
                        repr(lora_dropout))
        if not isinstance(adapter_name, str) or not adapter_name or "." in adapter_name:
            raise error(ValueError, op, "adapter_name", "a non-empty name without '.'",
                        repr(adapter_name))
        check_impl(op, impl)
        for p in base.parameters():
            p.requires_grad_(False)
        self.base_layer = base
        k, n = base.in_features, base.out_features
        w = base.weight
        self.lora_A = nn.ModuleDict(
            {adapter_name: nn.Linear(k, r, bias=False, device=w.device, dtype=w.dtype)})
        self.lora_B = nn.ModuleDict(
            {adapter_name: nn.Linear(r, n, bias=False, device=w.device, dtype=w.dtype)})
        self.lora_dropout = nn.ModuleDict(
            {adapter_name: nn.Dropout(p=lora_dropout) if lora_dropout > 0 else nn.Identity()})
        self.r = {adapter_name: r}
        self.lora_alpha = {adapter_name: lora_alpha}
        self.scaling = {adapter_name: lora_alpha / (math.sqrt(r) if use_rslora else r)}
        self.adapter_name, self.impl = adapter_name, impl
        self.in_features, self.out_features = k, n
        self.reset_lora_parameters()

    @torch.no_grad()
    def reset_lora_parameters(self):
        """A as ``nn.Linear`` initialises its weight, B zeros (the update starts at zero)."""
        a = self.lora_A[self.adapter_name].weight
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B[self.adapter_name].weight)

    def forward(self, x):
        name = self.adapter_name
        base = self.base_layer
        return lora_linear(x, base.weight, base.bias, self.lora_A[name].weight,
                           self.lora_B[name].weight, self.scaling[name], self.lora_dropout[name],
                           impl=self.impl)

    def extra_repr(self):
        name = self.adapter_name
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"r={self.r[name]}, scaling={self.scaling[name]:g}, adapter={name!r}, "
                f"impl={self.impl!r}")
