"""Unique names for the nodes and tensors a frontend writes."""
from __future__ import annotations


def fresh_name(taken: set[str], base: str) -> str:
    """``base``, or ``base_2``, ``base_3``, ... whichever is not in ``taken``; adds it there."""
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name
