"""Route a PEFT model's LoRA Linear layers through loraops, and back.

:func:`patch_peft` changes the class of every ``peft.tuners.lora.layer.Linear`` it can handle to
:class:`LoraopsPeftLinear`, a subclass whose only change is ``forward``; parameters, buffers,
``state_dict``, hooks and every other attribute stay as they were (an ``_loraops_impl`` attribute
is added). :func:`unpatch` sets the class back and removes that attribute.

The patched forward runs the fused ``loraops::lora_forward`` (see :func:`lora_linear`) when the
layer is in the plain LoRA state: adapters enabled, not merged, exactly one active adapter among
those the layer has weights for, no DoRA or other variant, no ``lora_bias``, no
``fan_in_fan_out``, an ``nn.Linear`` base layer without hooks, no extra forward arguments, and
dropout inactive (eval mode or ``lora_dropout == 0``). In any other state, including states
reached after patching (``merge_adapter``, ``set_adapter`` with several adapters,
``disable_adapter``, training with dropout), it calls PEFT's own forward, so results never depend
on patching except through rounding.
"""

import dataclasses

from torch import nn

from ._dispatch import check_impl
from .lora_linear import dropout_active, lora_linear

_CLASS = None


def _peft_linear():
    from peft.tuners.lora.layer import Linear

    return Linear


def _patched_class():
    """The patched subclass (made on first use, so that peft is imported only when needed)."""
    global _CLASS
    if _CLASS is None:
        base = _peft_linear()

        def forward(self, x, *args, **kwargs):
            if args or any(v is not None for v in kwargs.values()) or not _plain(self):
                return base.forward(self, x, *args, **kwargs)
            name = _active(self)[0]
            if dropout_active(self.lora_dropout[name]):
                return base.forward(self, x)
            layer = self.base_layer
            return lora_linear(x, layer.weight, layer.bias, self.lora_A[name].weight,
                               self.lora_B[name].weight, self.scaling[name],
                               impl=self._loraops_impl)

        _CLASS = type("LoraopsPeftLinear", (base,), {
            "forward": forward,
            "__module__": __name__,
            "__qualname__": "LoraopsPeftLinear",
            "__doc__": "PEFT's LoRA Linear with its forward routed through loraops "
                       "(``loraops.torch.patch_peft``).",
        })
    return _CLASS


def __getattr__(name):
    # lets pickle find the patched class by name in a process that has not patched anything yet
    if name == "LoraopsPeftLinear":
        return _patched_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _active(layer):
    """The active adapters `layer` has weights for (PEFT's forward skips the others)."""
    return [a for a in layer.active_adapters if a in layer.lora_A]


def _plain(layer):
    """Whether PEFT LoRA Linear `layer` is now in the state the fused path handles."""
    if layer.disable_adapters or layer.merged:
        return False
    adapters = _active(layer)
    if len(adapters) != 1:
        return False
    name = adapters[0]
    if name in getattr(layer, "lora_variant", {}):
        return False
    if layer.use_dora.get(name, False) or getattr(layer, "lora_bias", {}).get(name, False):
        return False
    if getattr(layer, "fan_in_fan_out", False):
        return False
    base = layer.base_layer
    if (type(base) is not nn.Linear or base._forward_hooks or base._forward_pre_hooks
            or "forward" in base.__dict__):
        return False
    a = layer.lora_A[name].weight
    # PEFT with input casting disabled would multiply x by A in x's dtype; we cast A instead
    return a.dtype == base.weight.dtype or getattr(layer, "cast_input_dtype_enabled", True)


def _why_not(layer):
    """Why a PEFT LoRA layer cannot be patched (None if it can), for the report."""
    if type(layer) is not _peft_linear():
        return f"layer type {type(layer).__module__}.{type(layer).__qualname__} (only " \
               "peft.tuners.lora.layer.Linear is handled)"
    base = layer.base_layer
    if type(base) is not nn.Linear:
        return f"base layer is {type(base).__qualname__}, not torch.nn.Linear (quantized?)"
    if type(base.weight) is not nn.Parameter:
        return f"base weight is a {type(base.weight).__qualname__} (quantized?)"
    if layer.merged:
        return "merged adapters"
    adapters = _active(layer)
    if len(adapters) != 1:
        return f"{len(adapters)} active adapters"
    name = adapters[0]
    if layer.use_dora.get(name, False):
        return "DoRA"
    if name in getattr(layer, "lora_variant", {}):
        return f"LoRA variant {type(layer.lora_variant[name]).__name__}"
    if getattr(layer, "lora_bias", {}).get(name, False):
        return "lora_bias"
    if getattr(layer, "fan_in_fan_out", False):
        return "fan_in_fan_out"
    if base._forward_hooks or base._forward_pre_hooks or "forward" in vars(base):
        return "hooks on the base layer"
    return None  # adapters disabled now: patched anyway, the forward checks the state per call


@dataclasses.dataclass
class PatchReport:
    """What :func:`patch_peft` did: the names of the layers it patched (``already`` ones were
    patched before and got the new ``impl``) and, for each PEFT LoRA layer it left alone, why."""

    patched: list = dataclasses.field(default_factory=list)
    already: list = dataclasses.field(default_factory=list)
    skipped: dict = dataclasses.field(default_factory=dict)

    @property
    def count(self):
        return len(self.patched) + len(self.already)

    def __int__(self):
        return self.count

    def __str__(self):
        s = f"loraops.torch.patch_peft: {len(self.patched)} LoRA Linear layers patched"
        if self.already:
            s += f", {len(self.already)} already patched"
        s += f", {len(self.skipped)} left to PEFT"
        reasons = {}
        for why in self.skipped.values():
            reasons[why] = reasons.get(why, 0) + 1
        return s + "".join(f"\n  {n} x {why}" for why, n in sorted(reasons.items()))


def patch_peft(model, *, impl="auto"):
    """Routes every PEFT LoRA Linear layer of `model` that loraops can run through loraops'
    fused LoRA op (see the module doc); returns a :class:`PatchReport`. `impl` is passed to the
    op. Layers it cannot handle (other layer types, quantized or hooked base layers, merged
    adapters, several active adapters, DoRA and other variants, ``lora_bias``) are left alone and
    listed in the report. Calling it again updates ``impl`` and patches newly eligible layers.
    """
    check_impl("patch_peft", impl)
    if not isinstance(model, nn.Module):
        raise TypeError(f"patch_peft: argument 'model': expected a torch.nn.Module, got "
                        f"{type(model).__name__}")
    from peft.tuners.lora.layer import LoraLayer

    cls = _patched_class()
    report = PatchReport()
    for name, m in model.named_modules():
        if type(m) is cls:
            m._loraops_impl = impl
            report.already.append(name)
        elif isinstance(m, LoraLayer):
            why = _why_not(m)
            if why is None:
                m.__class__ = cls
                m._loraops_impl = impl
                report.patched.append(name)
            else:
                report.skipped[name] = why
    return report


def unpatch(model):
    """Undoes :func:`patch_peft` on every layer of `model`: their class is PEFT's again and the
    attribute it added is gone. Returns how many layers it restored."""
    if _CLASS is None:
        return 0
    base = _peft_linear()
    n = 0
    for m in model.modules():
        if type(m) is _CLASS:
            m.__class__ = base
            del m._loraops_impl
            n += 1
    return n
