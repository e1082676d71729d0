"""`loraops bench`: times every implementation of every op on a suite of shapes, side by side.

Layout: suites (the shapes), frameworks (inputs, and the calls into loraops and PyTorch), timing
(the clocks), run (the loop that never lets one case stop the rest), report (table, JSON,
markdown), environment (what it ran on).
"""

from .run import BenchError, Options, import_torch, run_bench

__all__ = ["BenchError", "Options", "import_torch", "run_bench"]
