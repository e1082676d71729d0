"""loraops for PyTorch: custom ops, autograd, a LoRA layer and a PEFT patch.

Importing this module registers every loraops op as a ``torch.library`` custom op,
``torch.ops.loraops.<op>`` (matmul, softmax, rms_norm, layer_norm, activation, lora_forward,
lora_backward, attention), with fake implementations (``torch.compile(fullgraph=True)`` traces
them) and autograd formulas. CUDA work runs on torch's current stream, so the ops can be captured
in CUDA graphs.

- :mod:`loraops.torch.functional` (re-exported here): the ops as functions with loraops'
  signatures, differentiable. Where loraops has no kernel for the device and dtype, ``impl="auto"``
  runs the same math in PyTorch instead, and every backward except lora_forward's (which is
  loraops' ``lora_backward``) is PyTorch math; the module docstring lists what falls back today,
  and :func:`fallback_counts` says which calls did.
- :class:`LoRALinear`: a PEFT-compatible LoRA linear layer (same parameter names and state_dict)
  whose forward is one fused ``loraops::lora_forward`` call.
- :func:`patch_peft` / :func:`unpatch`: route a PEFT model's LoRA Linear layers through loraops
  without touching its parameters or state_dict, and back.
"""

from . import functional
from ._dispatch import fallback_counts
from .functional import (activation, attention, layer_norm, lora_backward, lora_forward, matmul,
                         rms_norm, softmax)
from .lora_linear import LoRALinear, lora_linear
from .peft_patch import PatchReport, patch_peft, unpatch

__all__ = [
    "LoRALinear",
    "PatchReport",
    "activation",
    "attention",
    "fallback_counts",
    "functional",
    "layer_norm",
    "lora_backward",
    "lora_forward",
    "lora_linear",
    "matmul",
    "patch_peft",
    "rms_norm",
    "softmax",
    "unpatch",
]
