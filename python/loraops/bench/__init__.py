"""`loraops bench`: times every implementation of every op on a suite of shapes, side by side.

Layout: suites (the shapes), frameworks (inputs, and the calls into loraops and PyTorch), timing
(the clocks), run (the loop that never lets one case stop the rest), report (table, JSON,
markdown), environment (what it ran on), cases_file (the cases as text for the C++ bench,
loraops_bench: bench/bench_cases.cpp).
"""

from .run import BenchError, Options, emit_cases, import_torch, run_bench, select_cases

__all__ = ["BenchError", "Options", "emit_cases", "import_torch", "run_bench", "select_cases"]
