"""pytest setup: the torch and gpu markers, and their clean skips."""

import importlib.util

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "torch: needs PyTorch (skipped when torch is not importable)")
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped when there is none)")


_HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _have_cuda():
    if not _HAVE_TORCH:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_runtest_setup(item):
    if item.get_closest_marker("torch") and not _HAVE_TORCH:
        pytest.skip("torch is not installed")
    if item.get_closest_marker("gpu") and not _have_cuda():
        pytest.skip("no CUDA device (or no torch to reach it)")
