"""A sanity check riding along with the timing: a kernel that is fast because it is wrong must not
top the table unnoticed. Each implementation's output is compared with the case's first output
(the reference's when it ran). This is no substitute for the tests: one random input, a loose
tolerance, the error taken relative to the largest output value.
"""

import numpy as np

# Above what rounding the output to its dtype and a different summation order can explain.
TOLERANCE = {"float32": 1e-3, "float16": 1e-2, "bfloat16": 3e-2}


def _parts(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _to_numpy(t):
    """float32 numpy of a numpy array (ml_dtypes' bfloat16 too) or a torch tensor."""
    if hasattr(t, "detach"):  # torch: compare on the host, where both frameworks meet
        return t.detach().float().cpu().numpy()
    return np.asarray(t).astype(np.float32)


def _rel_err(a, b):
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"shape {list(a.shape)} vs {list(b.shape)}")
    if hasattr(a, "detach") and hasattr(b, "detach") and a.device == b.device:
        # Both torch on one device: no copy of a large output to the host.
        diff = (a.float() - b.float()).abs().max().item() if a.numel() else 0.0
        scale = b.float().abs().max().item() if b.numel() else 0.0
    else:
        a, b = _to_numpy(a), _to_numpy(b)
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        scale = float(np.max(np.abs(b))) if b.size else 0.0
    return diff / scale if scale > 0 else diff


def compare(out, baseline, dtype):
    """(max relative error, note): note is empty when within tolerance. NaN counts as a mismatch."""
    outs, bases = _parts(out), _parts(baseline)
    if len(outs) != len(bases):
        return None, f"MISMATCH: {len(outs)} outputs vs {len(bases)}"
    try:
        err = max(_rel_err(a, b) for a, b in zip(outs, bases))
    except Exception as e:
        return None, f"MISMATCH: {e}"
    if not err <= TOLERANCE[dtype]:  # also true for NaN
        return err, f"MISMATCH: max error {err:.2g} of the largest value"
    return err, ""
