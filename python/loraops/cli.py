"""The `loraops` command line. `loraops bench` is the project's main job: it answers "is the vendor
library fast enough here, or do we need our own kernel?" with numbers (see docs and DESIGN.md)."""

import argparse
import faulthandler
import sys


def _positive(text):
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _parser():
    p = argparse.ArgumentParser(prog="loraops", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    b = sub.add_parser(
        "bench", help="time every implementation of every op on a suite of shapes",
        description="Times the reference, vendor, custom and auto implementations (and PyTorch "
                    "eager, when importable; torch.compile with --torch-compile) of each case of "
                    "a suite; prints a table and writes results.json and report.md.")
    b.add_argument("--suite", choices=("seed", "rowwise", "lora", "attention", "all"), default="seed",
                   help="which shapes (default: seed)")
    b.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: cuda when PyTorch sees a GPU and loraops has its CUDA backend")
    b.add_argument("--out", default="bench-out", help="output directory (default: ./bench-out)")
    b.add_argument("--repeats", type=_positive, default=0,
                   help="timed batches per case (default 20; 3 with --quick)")
    b.add_argument("--quick", action="store_true",
                   help="3 repeats of tiny batches: a smoke test, not a measurement")
    b.add_argument("--match", default="",
                   help="run only the cases whose 'op shape dtype' contains this text")
    b.add_argument("--compare", metavar="OLD.json", default="",
                   help="an earlier results.json: after the run, show (and write compare.md) "
                        "what got faster, slower, appeared, vanished or changed status")
    b.add_argument("--against", metavar="NEW.json", default="",
                   help="with --compare: compare OLD.json with this file instead of running")
    b.add_argument("--emit-cases", metavar="FILE", default="",
                   help="write the selected cases (--suite, --device, --match) to FILE, one per "
                        "line, for the C++ bench loraops_bench, and run nothing")
    b.add_argument("--torch-compile", action="store_true",
                   help="also time torch.compile'd PyTorch (mode default, fullgraph, static "
                        "shapes); off by default: every case costs a compile of seconds")
    b.add_argument("--cpp", metavar="BINARY", default="",
                   help="also time the same cases from C++ with this loraops_bench binary (built "
                        "with the tests: build/loraops_bench); report.md shows both")
    return p


def _compare_files(old_path, new_path):
    """--compare with --against: two files, no run, nothing written."""
    from .bench import compare

    old, new = compare.load(old_path), compare.load(new_path)
    sys.stdout.write(compare.text(compare.compare(old, new), old, new))


def main(argv=None):
    # A crash in native code (a GPU library, say) prints the Python stack that led there.
    if not faulthandler.is_enabled():
        faulthandler.enable()
    args = _parser().parse_args(argv)
    if args.command == "bench":
        from .bench import BenchError, Options, emit_cases, run_bench

        opts = Options(suite=args.suite, device=args.device, out=args.out, repeats=args.repeats,
                       quick=args.quick, match=args.match, compare=args.compare,
                       torch_compile=args.torch_compile, cpp=args.cpp)
        try:
            if args.against and not args.compare:
                raise BenchError("--against NEW.json needs --compare OLD.json")
            if args.emit_cases and (args.compare or args.against):
                raise BenchError("--emit-cases runs nothing: it does not go with --compare")
            if args.emit_cases:
                emit_cases(opts, args.emit_cases)
            elif args.against:
                _compare_files(args.compare, args.against)
            else:
                run_bench(opts)
        except BenchError as e:
            print(f"loraops bench: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
