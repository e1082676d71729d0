"""What the numbers were measured on: device, library builds and versions, for results.json and the
report's header. Every probe is best-effort: a missing fact is None, never a failed run."""

import os
import platform
import sys

import numpy as np


_THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_PROC_BIND",
               "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def safe(f, default=None):
    try:
        return f()
    except Exception:
        return default


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _usable_cores():
    # The affinity mask, not os.cpu_count(): containers and taskset limit what we may use.
    return safe(lambda: len(os.sched_getaffinity(0)), os.cpu_count())


def device_info(device, torch):
    info = {"type": device, "platform": platform.platform(), "python": sys.version.split()[0],
            "numpy": np.__version__, "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
            "usable_cores": _usable_cores()}
    # Thread pools (loraops' OpenMP, the BLAS's, PyTorch's) share the cores; how they were told
    # to behave changes small-op CPU timings by orders of magnitude, so it goes on record.
    info["thread_env"] = {k: os.environ[k] for k in _THREAD_ENV if k in os.environ}
    if torch is not None:
        info["torch_threads"] = safe(torch.get_num_threads)  # what torch's CPU rows ran on
    if device == "cuda":
        props = safe(lambda: torch.cuda.get_device_properties(torch.cuda.current_device()))
        info.update(
            name=safe(lambda: torch.cuda.get_device_name()),
            capability=safe(lambda: ".".join(map(str, torch.cuda.get_device_capability()))),
            memory_gib=safe(lambda: round(props.total_memory / 2**30, 1)),
            sm_count=safe(lambda: props.multi_processor_count),
            cuda_runtime=safe(lambda: torch.version.cuda),
            gpu_count=safe(lambda: torch.cuda.device_count()))
    else:
        info["name"] = info["cpu"]
    return info


def loraops_info(ops):
    def flag(name):
        f = getattr(ops, name, None)
        return safe(f) if callable(f) else None

    version = getattr(ops, "__version__", None)
    if version is None:
        from importlib import metadata

        version = safe(lambda: metadata.version("loraops"))
    return {"version": version, "built_with_cuda": flag("built_with_cuda"),
            "built_with_blas": flag("built_with_blas")}


def torch_version(torch):
    return None if torch is None else torch.__version__


# What the H100/H200 class has; used only when PyTorch cannot tell (older versions lack the field).
ASSUMED_L2_BYTES = 50 * 2**20


def l2_cache_bytes(torch):
    """(bytes, assumed): the GPU's L2 size from PyTorch's device properties, or ASSUMED_L2_BYTES
    and True when it cannot be read."""
    size = safe(lambda: int(torch.cuda.get_device_properties(
        torch.cuda.current_device()).L2_cache_size))
    if size and size > 0:
        return size, False
    return ASSUMED_L2_BYTES, True


def mlx_info(importer=None):
    """{"available", "version", "note"}: whether MLX's CUDA build is importable here with a CUDA
    device. Probed, never installed. importer: for tests, a function returning mlx.core."""
    def default_import():
        import mlx.core

        return mlx.core

    try:
        mx = (importer or default_import)()
    except Exception as e:  # ImportError, or a wheel that fails to load its CUDA libraries
        why = "not importable on this machine"
        if not isinstance(e, ImportError):
            why += f" ({type(e).__name__}: {e})"
        return {"available": False, "version": None, "note": why}
    version = getattr(mx, "__version__", None)
    cuda = getattr(mx, "cuda", None)
    on_cuda = safe(lambda: bool(cuda.is_available())) if cuda is not None else None
    if on_cuda is None:  # older MLX: ask whether its GPU device is usable at all
        on_cuda = safe(lambda: bool(mx.is_available(mx.gpu))
                       and getattr(mx, "metal", None) is None)
    if not on_cuda:
        return {"available": False, "version": version,
                "note": "importable, but without a usable CUDA device"}
    return {"available": True, "version": version, "note": "CUDA device found"}
