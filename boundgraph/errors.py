"""Errors raised by boundgraph.

Every error a user can provoke with bad input is a :class:`BoundGraphError` with one readable
message; nothing from deep inside torch should reach the user for a problem we can name.
"""
from __future__ import annotations


class BoundGraphError(Exception):
    """Base class of all boundgraph errors."""


class InputError(BoundGraphError, ValueError):
    """Bad user input: wrong shape, negative eps, NaN in the data, a bad specification."""


class UnsupportedOpError(BoundGraphError):
    """The model contains operations that have no bound rules.

    ``nodes`` lists ``(node_name, op, where)`` for every unsupported node, so one error reports
    all of them at once.
    """

    def __init__(self, nodes: list[tuple[str, str, str]], model: str = "the model"):
        self.nodes = list(nodes)
        lines = [f"{len(self.nodes)} operation(s) in {model} have no bound rules:"]
        for name, op, where in self.nodes:
            lines.append(f"  - node '{name}': op {op}" + (f" (from {where})" if where else ""))
        lines.append(
            "Register a rule for an op with boundgraph.register_op(target, factory) "
            "(see the docstring of boundgraph.register_op), or rewrite that part of the model "
            "with supported operations (README: 'Supported operations')."
        )
        super().__init__("\n".join(lines))


class TraceError(BoundGraphError):
    """The model could not be traced into a bound graph."""
