"""Command line interface: ``boundgraph <command> ...`` (also ``python -m boundgraph``).

Each command lives in its own module under :mod:`boundgraph.commands` and provides
``register(subparsers)``; the parser it adds sets ``func(args) -> int`` (the exit status).
A :class:`~boundgraph.errors.BoundGraphError` (or another expected input problem) is printed as
one line on stderr with exit status 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["bounds", "train", "eval", "verify", "export", "bench", "demo"]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="boundgraph",
                                description="Certified robustness for PyTorch models.")
    p.add_argument("--version", action="version", version=f"boundgraph {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"boundgraph.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"boundgraph.commands.{name}":
                continue  # command not built yet
            raise
        mod.register(sub)
    return p


def main(argv=None) -> int:
    from .errors import BoundGraphError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (BoundGraphError, FileNotFoundError, ValueError) as e:
        print(f"boundgraph {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"boundgraph {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
