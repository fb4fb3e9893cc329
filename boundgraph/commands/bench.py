"""``boundgraph bench``: run the benchmark suite (``python -m benchmarks.suite``)."""
from __future__ import annotations


def register(sub):
    p = sub.add_parser("bench", help="run the benchmark suite and write its results",
                       description="Run the benchmarks (bounds, scaling, training, vnncomp, "
                                   "peers, certified), each writing JSON, a Markdown table and "
                                   "a PNG plot stamped with the machine, torch version and git "
                                   "commit. --quick runs small sizes within a time budget and "
                                   "writes *_quick files.")
    try:
        from benchmarks.suite import add_arguments
    except ImportError:  # installed without the benchmarks package
        p.set_defaults(func=_missing)
        return
    add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from benchmarks.suite import run as run_suite

    return run_suite(args)


def _missing(args) -> int:
    from boundgraph.errors import InputError

    raise InputError("the benchmarks package is not importable; run from a source checkout "
                     "of boundgraph")
