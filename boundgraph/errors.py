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


class DomainError(BoundGraphError, ValueError):
    """An op's input interval leaves the domain where the op is defined or bounded (a log or
    reciprocal over an interval reaching 0, a square root of negative numbers).

    Op rules raise it with what went wrong; the engines add the node (``node``, and the line
    of user code in ``where``) before it reaches the user.
    """

    def __init__(self, message: str, node: str | None = None, where: str = ""):
        self.message, self.node, self.where = message, node, where
        text = message
        if node is not None:
            text = f"node '{node}'" + (f" (from {where})" if where else "") + f": {message}"
        super().__init__(text)

    def at(self, node: str, where: str = "") -> "DomainError":
        """The same error, naming the node (kept if already named)."""
        if self.node is not None:
            return self
        return DomainError(self.message, node, where)
