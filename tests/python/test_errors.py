"""Bad input: the right exception type, and a message naming the op and the argument."""

import numpy as np
import pytest

import loraops
from util import np_dtype

f32 = np.float32


def z(*shape, dtype=f32):
    return np.zeros(shape, dtype)


def r(*shape, dtype=f32):
    return np.ones(shape, dtype)


W, A, B = r(6, 4), r(2, 4), r(6, 2)  # a LoRA layer with K=4, N=6, r=2
Q, K, V = r(1, 4, 3, 8), r(1, 2, 5, 8), r(1, 2, 5, 8)

# (id, call, exception type, argument named, a piece of the message)
CASES = [
    # not a tensor / unsupported dtype
    ("list", lambda: loraops.softmax([1.0, 2.0]), TypeError, "x", "got list"),
    ("int", lambda: loraops.activation(3, "relu"), TypeError, "x", "expected a DLPack tensor"),
    ("none-required", lambda: loraops.matmul(r(2, 2), None), TypeError, "b", "got None"),
    ("str", lambda: loraops.rms_norm("x"), TypeError, "x", "got str"),
    ("int32", lambda: loraops.softmax(z(3, 4, dtype=np.int32)), TypeError, "x", "got int32"),
    ("float64", lambda: loraops.layer_norm(z(3, 4, dtype=np.float64)), TypeError, "x", "got float64"),
    ("bool", lambda: loraops.activation(z(3, dtype=bool), "relu"), TypeError, "x", "got bool"),
    ("uint16", lambda: loraops.softmax(z(3, dtype=np.uint16)), TypeError, "x", "got uint16"),
    ("complex", lambda: loraops.softmax(z(3, dtype=np.complex64)), TypeError, "x", "got complex64"),
    ("object", lambda: loraops.softmax(np.array([1.0, "a"], dtype=object)), TypeError, "x", "got object"),
    ("int32-weight", lambda: loraops.rms_norm(r(2, 4), z(4, dtype=np.int32)), TypeError, "weight", "int32"),
    ("list-lora-b", lambda: loraops.lora_forward(r(3, 4), W, A, [[1.0]], 1.0), TypeError, "lora_b", "list"),
    # mixed dtypes
    ("mixed-matmul", lambda: loraops.matmul(r(2, 3), r(3, 4, dtype=np.float16)), TypeError, "b", "float16"),
    ("mixed-norm", lambda: loraops.layer_norm(r(2, 4), None, r(4, dtype=np.float16)), TypeError, "bias", "float16"),
    ("mixed-lora", lambda: loraops.lora_forward(r(3, 4), W.astype(np.float16), A, B, 1.0), TypeError, "weight", "float16"),
    ("mixed-attn", lambda: loraops.attention(Q, K, V.astype(np.float16)), TypeError, "v", "float16"),
    ("mixed-c", lambda: loraops.matmul(r(2, 3), r(3, 4), beta=1.0, c=r(2, 4, dtype=np.float16)), TypeError, "c", "float16"),
    # rank
    ("matmul-1d", lambda: loraops.matmul(r(3), r(3, 4)), ValueError, "a", "rank 2..3"),
    ("matmul-rank-mismatch", lambda: loraops.matmul(r(2, 3), r(2, 3, 4)), ValueError, "b", "rank 2"),
    ("softmax-0d", lambda: loraops.softmax(r()), ValueError, "x", "rank"),
    ("norm-weight-2d", lambda: loraops.rms_norm(r(2, 4), r(1, 4)), ValueError, "weight", "rank 1"),
    ("lora-weight-1d", lambda: loraops.lora_forward(r(3, 4), r(4), A, B, 1.0), ValueError, "weight", "rank 2"),
    ("attn-3d", lambda: loraops.attention(r(4, 3, 8), K, V), ValueError, "q", "rank 4"),
    ("rank-9", lambda: loraops.activation(r(*(1,) * 9), "relu"), ValueError, "x", "rank"),
    # shapes
    ("matmul-inner", lambda: loraops.matmul(r(2, 3), r(4, 5)), ValueError, "b", "3 rows"),
    ("matmul-inner-trans", lambda: loraops.matmul(r(2, 3), r(4, 5), trans_b=True), ValueError, "b", "trans_b"),
    ("matmul-batch", lambda: loraops.matmul(r(2, 2, 3), r(3, 3, 4)), ValueError, "b", "batch 2"),
    ("matmul-c-shape", lambda: loraops.matmul(r(2, 3), r(3, 4), beta=1.0, c=r(4, 2)), ValueError, "c", "[2, 4]"),
    ("matmul-beta-no-c", lambda: loraops.matmul(r(2, 3), r(3, 4), beta=1.0), ValueError, "c", "beta != 0"),
    ("norm-weight-len", lambda: loraops.layer_norm(r(2, 4), r(5)), ValueError, "weight", "[4]"),
    ("lora-K", lambda: loraops.lora_forward(r(3, 5), W, A, B, 1.0), ValueError, "weight", "K = x's last dim"),
    ("lora-a", lambda: loraops.lora_forward(r(3, 4), W, r(2, 5), B, 1.0), ValueError, "lora_a", "[r, 4]"),
    ("lora-b", lambda: loraops.lora_forward(r(3, 4), W, A, r(6, 3), 1.0), ValueError, "lora_b", "[6, 2]"),
    ("lora-bias", lambda: loraops.lora_forward(r(3, 4), W, A, B, 1.0, r(5)), ValueError, "bias", "[6]"),
    ("lora-grad-y", lambda: loraops.lora_backward(r(3, 5), r(3, 4), W, A, B, 1.0), ValueError, "grad_y", "[3, 6]"),
    ("attn-gqa", lambda: loraops.attention(r(1, 4, 3, 8), r(1, 3, 5, 8), r(1, 3, 5, 8)), ValueError, "k", "divides"),
    ("attn-d", lambda: loraops.attention(Q, r(1, 2, 5, 4), r(1, 2, 5, 4)), ValueError, "k", "D as q"),
    ("attn-v", lambda: loraops.attention(Q, K, r(1, 2, 6, 8)), ValueError, "v", "as k"),
    ("attn-batch", lambda: loraops.attention(Q, r(2, 2, 5, 8), r(2, 2, 5, 8)), ValueError, "k", "B and D"),
    # other values
    ("softmax-dim", lambda: loraops.softmax(r(2, 3), dim=2), ValueError, "dim", "[-2, 1]"),
    ("softmax-dim-huge", lambda: loraops.softmax(r(2, 3), dim=2**40), ValueError, "dim", "got 1099511627776"),
    ("eps-negative", lambda: loraops.rms_norm(r(2, 3), eps=-1.0), ValueError, "eps", "eps >= 0"),
    ("eps-nan", lambda: loraops.layer_norm(r(2, 3), eps=float("nan")), ValueError, "eps", "finite"),
    ("attn-scale-inf", lambda: loraops.attention(Q, K, V, scale=float("inf")), ValueError, "scale", "finite"),
    ("kind", lambda: loraops.activation(r(3), "swish"), ValueError, "kind", "'swish'"),
    ("kind-case", lambda: loraops.activation(r(3), "ReLU"), ValueError, "kind", "relu, sigmoid"),
    ("impl", lambda: loraops.softmax(r(3), impl="fast"), ValueError, "impl", "'fast'"),
    ("impl-matmul", lambda: loraops.matmul(r(2, 2), r(2, 2), impl="cublas"), ValueError, "impl", "auto, vendor, custom, reference"),
    # Python scalars of the wrong type
    ("kind-type", lambda: loraops.activation(r(3), None), TypeError, "kind", "a str"),
    ("impl-type", lambda: loraops.softmax(r(3), impl=1), TypeError, "impl", "a str"),
    ("dim-float", lambda: loraops.softmax(r(3), dim=0.0), TypeError, "dim", "an int"),
    ("dim-bool", lambda: loraops.softmax(r(3), dim=True), TypeError, "dim", "an int"),
    ("eps-str", lambda: loraops.rms_norm(r(3), eps="1e-6"), TypeError, "eps", "a real number"),
    ("scale-str", lambda: loraops.lora_forward(r(3, 4), W, A, B, "2"), TypeError, "scale", "got str"),
    ("scale-none", lambda: loraops.lora_forward(r(3, 4), W, A, B, None), TypeError, "scale", "got None"),
    ("alpha-list", lambda: loraops.matmul(r(2, 2), r(2, 2), alpha=[1.0]), TypeError, "alpha", "got list"),
    ("beta-complex", lambda: loraops.matmul(r(2, 2), r(2, 2), beta=1j, c=r(2, 2)), TypeError, "beta", "complex"),
    ("trans-int", lambda: loraops.matmul(r(2, 2), r(2, 2), trans_a=1), TypeError, "trans_a", "a bool"),
    ("causal-str", lambda: loraops.attention(Q, K, V, causal="yes"), TypeError, "causal", "a bool"),
    ("attn-scale-str", lambda: loraops.attention(Q, K, V, scale="x"), TypeError, "scale", "a real number"),
    # implementations that do not exist
    ("vendor-softmax", lambda: loraops.softmax(r(2, 3), impl="vendor"), loraops.UnsupportedError, "impl",
     "vendor on cpu: a BLAS has no such operation"),
    ("vendor-layer-norm-empty", lambda: loraops.layer_norm(z(0, 3), impl="vendor"), loraops.UnsupportedError,
     "impl", "vendor on cpu"),
]


@pytest.mark.parametrize("call,exc,arg,text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(call, exc, arg, text):
    with pytest.raises(exc) as info:
        call()
    e = info.value
    msg = str(e)
    assert f"argument '{arg}'" in msg, msg
    assert text in msg, msg
    assert e.argument == arg
    assert msg.startswith(f"{e.op}: argument '{arg}': expected {e.expected}, got {e.got}")
    assert type(e) is exc or (exc is TypeError and isinstance(e, TypeError))


def test_unsupported_error_type():
    assert issubclass(loraops.UnsupportedError, NotImplementedError)
    assert loraops.UnsupportedError.__module__ == "loraops"
    assert loraops.UnsupportedError.__name__ == "UnsupportedError"


def test_bfloat16_mixed_with_uint16():
    """A genuine uint16 array next to a bfloat16 one is uint16, not bfloat16 bits."""
    bf = np_dtype("bfloat16")
    with pytest.raises(TypeError, match="argument 'weight'.*got uint16"):
        loraops.rms_norm(np.ones((2, 4), bf), np.ones(4, np.uint16))
    with pytest.raises(TypeError, match="argument 'weight'.*float32 \\(as x\\), got bfloat16"):
        loraops.rms_norm(np.ones((2, 4), np.float32), np.ones(4, bf))


def test_errors_leave_no_partial_state():
    """After a failed call the next good call works (nothing half-initialised)."""
    for case in CASES:
        with pytest.raises(Exception):
            case[1]()
    out = loraops.softmax(np.zeros((2, 3), np.float32))
    assert np.allclose(out, 1.0 / 3.0)


def test_cuda_unsupported_without_cuda_message():
    """Asking about CUDA is fine on any build; has_impl answers rather than raising."""
    assert loraops.has_impl("activation", "cuda", "custom") == loraops.built_with_cuda()
