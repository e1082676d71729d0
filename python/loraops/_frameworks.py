"""Which framework a call's tensors come from, and how outputs of the same kind are made.

The framework is that of the op's first tensor argument:

- ``torch.Tensor``: outputs come from ``torch.empty`` on the input's device (called by the
  extension); CUDA work runs on ``torch.cuda.current_stream(device)``; the extension reads plain
  tensors directly, the rest travel as DLPack capsules made without stream synchronisation (see
  ``_torch_capsule``);
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

from . import _ext
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


def _identity(result):
    return result


def _torch_capsule(op, arg, t):
    """A DLPack capsule of torch tensor `t`, made without any stream synchronisation.

    The extension reads plain torch tensors directly (data_ptr, shape, stride, dtype, device:
    far cheaper than any export); it calls this for the rest (other devices, lazily negated views,
    other dtypes and layouts, subclasses), so they are refused or exported as before.

    ``Tensor.__dlpack__()`` without a stream makes the legacy default stream wait for the current
    one (an event per tensor per call, and an error under CUDA graph capture), and recent versions
    refuse tensors of a device other than the current one. We run on the current stream, so no
    synchronisation is needed: the legacy ``to_dlpack`` gives the bare capsule."""
    if t.device.type not in ("cpu", "cuda"):
        raise error(ValueError, op, arg, "a cpu or cuda tensor", f"a torch.Tensor on {t.device}")
    from torch.utils.dlpack import to_dlpack

    if t.requires_grad:
        t = t.detach()  # we only read it; DLPack has no notion of autograd
    if t.is_neg():
        t = t.resolve_neg()  # a lazily negated view (x.conj().imag): DLPack would drop the sign
    return to_dlpack(t)


_torch = None  # torch, once its objects are registered with the extension
_raw_stream = None  # device index -> torch's current CUDA stream there, as an int


def _register_torch(torch):
    global _torch, _raw_stream
    _ext.register_torch(torch.Tensor, torch.nn.Parameter,
                        (torch.float32, torch.float16, torch.bfloat16), torch.strided,
                        torch.empty, _torch_capsule)
    # What torch.cuda.current_stream(i).cuda_stream returns, without making a Stream object (a
    # few microseconds a call); torch's own generated code uses it. The public call otherwise.
    _raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) or (
        lambda index: torch.cuda.current_stream(index).cuda_stream)
    _torch = torch


class Prepared:
    """One call's arguments as the extension takes them."""

    __slots__ = ("args", "alloc", "stream", "bf16", "finish")


def prepare(op, names, values):
    """Converts `values` (the op's tensor arguments, named `names`, first one deciding the
    framework) and picks the allocator and stream."""
    np = sys.modules.get("numpy")
    torch = sys.modules.get("torch")
    if torch is not None and _torch is None:
        _register_torch(torch)
    p = Prepared()
    p.args = values  # torch tensors go as they are: the extension reads them
    p.bf16 = None
    p.stream = 0
    bf16_dtype = None
    if np is not None:
        for i, v in enumerate(values):
            if isinstance(v, np.ndarray):
                dt = v.dtype
                # ml_dtypes' types are of kind 'V'; checked first because dtype.name is slow (us)
                if dt.kind == "V" and dt.name == "bfloat16":
                    if bf16_dtype is None:
                        p.args = list(values)
                    p.args[i] = v.view(np.uint16)
                    bf16_dtype = dt
                    p.bf16 = (p.bf16 or ()) + (names[i],)

    first = values[0]
    p.finish = _identity
    if torch is not None and isinstance(first, torch.Tensor):
        p.alloc = first  # the extension makes outputs with torch.empty on first's device
        if first.is_cuda:
            p.stream = _raw_stream(first.get_device())
    elif np is not None and isinstance(first, np.ndarray) and bf16_dtype is None:
        # the core checks every input has first's dtype (not bfloat16 here) before allocating
        p.alloc = np.empty
    elif (np is not None and isinstance(first, np.ndarray)) or not hasattr(first, "__dlpack__"):
        # numpy bfloat16; or no tensor at all, which the extension rejects before allocating
        out = _NumpyOutputs(bf16_dtype)
        p.alloc, p.finish = out, out.finish
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
        p.alloc, p.finish = out, out.finish
    return p
