"""Which framework a call's tensors come from, and how outputs of the same kind are made.

The framework is that of the op's first tensor argument:

- ``torch.Tensor``: outputs come from ``torch.empty`` on the input's device; CUDA work runs on
  ``torch.cuda.current_stream(device)``; tensors travel as DLPack capsules made without stream
  synchronisation (see ``_torch_capsule``);
- ``numpy.ndarray``: outputs come from ``numpy.empty``;
- any other object with ``__dlpack__`` whose data is in host memory: outputs are numpy arrays;
- a CUDA tensor of another framework: refused (there is no way to allocate its outputs).

numpy has no bfloat16; ml_dtypes' ``bfloat16`` arrays are accepted and returned. DLPack cannot
carry their dtype, so the extension is given a uint16 view of each and told, by argument name,
that those bits are bfloat16.

torch and ml_dtypes are never imported here: a torch tensor can only exist once torch is
imported, and an ml_dtypes array carries its own dtype object (ml_dtypes is imported only for a
bfloat16 output of a non-numpy CPU producer). numpy is imported on first use.
"""

import sys

from ._args import error, type_name

_HOST_DLPACK_DEVICES = (1, 3)  # kDLCPU, kDLCUDAHost (pinned host memory)


def _numpy():
    import numpy

    return numpy


class _NumpyOutputs:
    """Allocator of numpy outputs; remembers them so bfloat16 ones are returned as such."""

    __slots__ = ("bf16_dtype", "arrays")

    def __init__(self, bf16_dtype=None):
        self.bf16_dtype = bf16_dtype
        self.arrays = []

    def __call__(self, shape, dtype):
        np = _numpy()
        if dtype == "bfloat16":
            if self.bf16_dtype is None:
                import ml_dtypes  # a bfloat16 input from elsewhere (a DLPack producer)

                self.bf16_dtype = ml_dtypes.bfloat16
            a = np.empty(shape, self.bf16_dtype)
            self.arrays.append(a)
            return a.view(np.uint16)
        a = np.empty(shape, dtype)
        self.arrays.append(a)
        return a

    def finish(self, result):
        if isinstance(result, tuple):
            return tuple(self.arrays)
        return self.arrays[0]


def _torch_capsule(torch, t):
    """A DLPack capsule of torch tensor `t`, made without any stream synchronisation.

    ``Tensor.__dlpack__()`` without a stream makes the legacy default stream wait for the current
    one (an event per tensor per call, and an error under CUDA graph capture), and recent versions
    refuse tensors of a device other than the current one. We run on the current stream, so no
    synchronisation is needed: the legacy ``to_dlpack`` gives the bare capsule."""
    from torch.utils.dlpack import to_dlpack

    if t.requires_grad:
        t = t.detach()  # we only read it; DLPack has no notion of autograd
    if t.is_neg():
        t = t.resolve_neg()  # a lazily negated view (x.conj().imag): DLPack would drop the sign
    return to_dlpack(t)


class _TorchOutputs:
    """Allocator of torch outputs on the first tensor's device."""

    __slots__ = ("torch", "device", "tensors")

    _dtypes = None

    def __init__(self, torch, device):
        self.torch = torch
        self.device = device
        self.tensors = []
        if _TorchOutputs._dtypes is None:
            _TorchOutputs._dtypes = {
                "float32": torch.float32,
                "float16": torch.float16,
                "bfloat16": torch.bfloat16,
            }

    def __call__(self, shape, dtype):
        t = self.torch.empty(shape, dtype=self._dtypes[dtype], device=self.device)
        self.tensors.append(t)
        return _torch_capsule(self.torch, t)

    def finish(self, result):
        if isinstance(result, tuple):
            return tuple(self.tensors)
        return self.tensors[0]


class Prepared:
    """One call's arguments as the extension takes them."""

    __slots__ = ("args", "alloc", "stream", "bf16", "finish")


def prepare(op, names, values):
    """Converts `values` (the op's tensor arguments, named `names`, first one deciding the
    framework) and picks the allocator and stream."""
    np = sys.modules.get("numpy")
    torch = sys.modules.get("torch")
    p = Prepared()
    args = list(values)
    bf16 = None
    bf16_dtype = None
    for i, v in enumerate(values):
        if np is not None and isinstance(v, np.ndarray):
            dt = v.dtype
            # ml_dtypes' types are of kind 'V'; checked first because dtype.name is slow (us)
            if dt.kind == "V" and dt.name == "bfloat16":
                args[i] = v.view(np.uint16)
                bf16_dtype = dt
                bf16 = (bf16 or ()) + (names[i],)
        elif torch is not None and isinstance(v, torch.Tensor):
            if v.device.type not in ("cpu", "cuda"):
                raise error(ValueError, op, names[i], "a cpu or cuda tensor",
                            f"a torch.Tensor on {v.device}")
            args[i] = _torch_capsule(torch, v)
    p.args = args
    p.bf16 = bf16
    p.stream = 0

    first = values[0]
    if torch is not None and isinstance(first, torch.Tensor):
        out = _TorchOutputs(torch, first.device)
        if first.device.type == "cuda":
            p.stream = torch.cuda.current_stream(first.device).cuda_stream
    elif (np is not None and isinstance(first, np.ndarray)) or not hasattr(first, "__dlpack__"):
        # numpy; or no tensor at all, which the extension rejects before allocating anything
        out = _NumpyOutputs(bf16_dtype)
    else:
        try:
            device_type = int(first.__dlpack_device__()[0])
        except Exception:  # no or a broken __dlpack_device__: let the import decide
            device_type = 1
        if device_type not in _HOST_DLPACK_DEVICES:
            raise error(
                TypeError, op, names[0],
                "a numpy.ndarray, a torch.Tensor or a DLPack tensor in host memory "
                "(outputs are made by numpy or torch)",
                f"{type_name(first)} on DLPack device type {device_type}")
        out = _NumpyOutputs(bf16_dtype)
    p.alloc = out
    p.finish = out.finish
    return p
