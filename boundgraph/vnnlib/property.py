"""The compiled form of a VNN-LIB property: :class:`Property`, a union of :class:`Disjunct`.

Also :class:`VnnlibError`, raised for files outside the supported subset. The text side (reading
and parsing ``.vnnlib`` files) is in :mod:`boundgraph.vnnlib.reader` and
:mod:`boundgraph.vnnlib.parser`; the conventions and the supported subset are described in
:mod:`boundgraph.vnnlib` (the "module notes" referred to below).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

try:  # share the library's error hierarchy when it is there
    from boundgraph.errors import InputError as _ErrorBase
except ImportError:  # pragma: no cover - the module must also work on its own
    _ErrorBase = ValueError


class VnnlibError(_ErrorBase):
    """A VNN-LIB file (or counterexample file) that cannot be read or is outside the subset.

    Always a :class:`ValueError`. ``path`` is the file (or ``None`` for text), ``line`` the
    1-based line of the offending form when known, ``detail`` the message without location.
    """

    def __init__(self, detail: str, path: str | None = None, line: int | None = None):
        self.detail = detail
        self.path = path
        self.line = line
        where = f"VNN-LIB file '{path}'" if path is not None else "VNN-LIB text"
        if line is not None:
            where += f", line {line}"
        super().__init__(f"{where}: {detail}")


# ----------------------------------------------------------------------------------------------
# Result types


@dataclass(eq=False)
class Disjunct:
    """One alternative of the unsafe condition: ``lower <= x <= upper`` and ``C @ y <= d``.

    ``lower``/``upper`` have shape ``(n_inputs,)``, ``C`` has shape ``(m, n_outputs)`` and ``d``
    shape ``(m,)``; all rows must hold at once for an output ``y`` to be unsafe. ``m == 0``
    means every input of the box is unsafe. A verifier shows this alternative is impossible
    (``unsat``) by proving ``min over the box of (C f(x) - d)[i] > 0`` for some row ``i``.
    Arrays are converted to float64.
    """

    lower: np.ndarray
    upper: np.ndarray
    C: np.ndarray
    d: np.ndarray

    def __post_init__(self) -> None:
        self.lower = np.asarray(self.lower, dtype=np.float64)
        self.upper = np.asarray(self.upper, dtype=np.float64)
        self.C = np.asarray(self.C, dtype=np.float64)
        self.d = np.asarray(self.d, dtype=np.float64)
        if self.lower.ndim != 1 or self.lower.shape != self.upper.shape:
            raise ValueError(
                f"Disjunct: lower and upper must be 1-D of the same length, got shapes "
                f"{self.lower.shape} and {self.upper.shape}"
            )
        if self.C.ndim != 2 or self.d.shape != (self.C.shape[0],):
            raise ValueError(
                f"Disjunct: C must be 2-D (m, n_outputs) and d of shape (m,), got shapes "
                f"{self.C.shape} and {self.d.shape}"
            )

    @property
    def n_constraints(self) -> int:
        """Number of output rows ``m`` (0 means the whole box is unsafe)."""
        return int(self.C.shape[0])

    def contains(self, x, y, tol: float = 0.0, strict: bool = False) -> bool:
        """Whether ``(x, y)`` lies in this unsafe alternative, allowing slack ``tol``.

        True when ``lower - tol <= x <= upper + tol`` and ``C @ y - d <= tol`` for every row,
        i.e. when ``x`` with network output ``y`` is a counterexample for this alternative.
        ``strict`` asks for every inequality to hold strictly (``tol`` must then be 0): a point
        that passes is a counterexample whichever of the file's comparisons were strict.
        """
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if x.shape != self.lower.shape or y.shape[0] != self.C.shape[1]:
            raise ValueError(
                f"contains: expected x of length {self.lower.shape[0]} and y of length "
                f"{self.C.shape[1]}, got {x.shape[0]} and {y.shape[0]}"
            )
        if strict:
            if tol != 0.0:
                raise ValueError("contains: strict needs tol = 0")
            return bool(np.all(x > self.lower) and np.all(x < self.upper)
                        and np.all(self.C @ y - self.d < 0))
        if np.any(x < self.lower - tol) or np.any(x > self.upper + tol):
            return False
        return bool(np.all(self.C @ y - self.d <= tol))


@dataclass(eq=False, repr=False)
class Property:
    """A parsed VNN-LIB property: the unsafe region is the union of ``disjuncts``.

    Convention: each :class:`Disjunct` ``k`` is ``{x in [lower_k, upper_k], C_k y <= d_k}``
    with ``y = f(x)``; ``C y <= d`` is the UNSAFE condition. The property is ``sat`` if some
    disjunct contains a point ``(x, f(x))``; a verifier proves ``unsat`` by showing, for every
    disjunct, that some row of ``C_k f(x) - d_k`` has a minimum over the box ``> 0``. An empty
    ``disjuncts`` list means the unsafe region is empty (trivially ``unsat``).
    """

    n_inputs: int
    n_outputs: int
    disjuncts: list[Disjunct] = field(default_factory=list)
    path: str | None = None
    #: the file uses a strict comparison (< or >), parsed as <= / >= (see the module notes)
    strict: bool = False

    @property
    def is_single_box(self) -> bool:
        """True when there is at least one disjunct and all disjuncts share one input box.

        Then a verifier can bound the network once over ``disjuncts[0].lower/upper`` and check
        every disjunct's ``C, d`` against those bounds.
        """
        if not self.disjuncts:
            return False
        first = self.disjuncts[0]
        return all(
            np.array_equal(dj.lower, first.lower) and np.array_equal(dj.upper, first.upper)
            for dj in self.disjuncts[1:]
        )

    def by_box(self) -> list[tuple[np.ndarray, np.ndarray, list[Disjunct]]]:
        """Group the disjuncts by input box: ``[(lower, upper, [disjuncts with that box]), ...]``.

        Boxes appear in order of first occurrence. Each group is unsafe if any of its disjuncts
        is, so a verifier needs one bound computation per group.
        """
        groups: dict[tuple[bytes, bytes], tuple[np.ndarray, np.ndarray, list[Disjunct]]] = {}
        for dj in self.disjuncts:
            key = (dj.lower.tobytes(), dj.upper.tobytes())
            if key not in groups:
                groups[key] = (dj.lower, dj.upper, [])
            groups[key][2].append(dj)
        return list(groups.values())

    def is_counterexample(self, x, y, tol: float = 0.0) -> bool:
        """Whether input ``x`` with network output ``y`` lies in the unsafe region.

        ``tol`` loosens both the box and the output rows (see :meth:`Disjunct.contains`);
        VNN-COMP checks counterexamples with a small tolerance such as ``1e-4``.
        """
        return any(dj.contains(x, y, tol) for dj in self.disjuncts)

    def summary(self, max_disjuncts: int = 4, max_inputs: int = 6) -> str:
        """Readable multi-line description: sizes, then boxes and constraints of a few disjuncts."""
        name = os.path.basename(self.path) if self.path else "<text>"
        n_boxes = len(self.by_box())
        lines = [
            f"VNN-LIB property {name}: {self.n_inputs} inputs, {self.n_outputs} outputs, "
            f"{len(self.disjuncts)} disjunct(s) over {n_boxes} input box(es); "
            "unsafe if for some disjunct x is in the box and C y <= d"
        ]
        if not self.disjuncts:
            lines.append("  unsafe region is empty (trivially unsat)")
        for k, dj in enumerate(self.disjuncts[:max_disjuncts]):
            lines.append(f"  disjunct {k}: box {_format_box(dj, max_inputs)}")
            if dj.n_constraints == 0:
                lines.append("    no output constraint: the whole box is unsafe")
            for i in range(dj.n_constraints):
                lines.append(f"    {_format_row(dj.C[i], dj.d[i])}")
        if len(self.disjuncts) > max_disjuncts:
            lines.append(f"  ... {len(self.disjuncts) - max_disjuncts} more disjunct(s)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return (
            f"Property(n_inputs={self.n_inputs}, n_outputs={self.n_outputs}, "
            f"disjuncts=<{len(self.disjuncts)}>, path={self.path!r})"
        )


def _format_box(dj: Disjunct, max_inputs: int) -> str:
    parts = [
        f"X_{i} in [{dj.lower[i]:.10g}, {dj.upper[i]:.10g}]"
        for i in range(min(max_inputs, dj.lower.shape[0]))
    ]
    if dj.lower.shape[0] > max_inputs:
        parts.append(f"... ({dj.lower.shape[0]} inputs)")
    return ", ".join(parts)


def _format_row(row: np.ndarray, d: float) -> str:
    terms = []
    for j in np.flatnonzero(row):
        c = float(row[j])
        sign = "-" if c < 0 else "+"
        mag = abs(c)
        coef = "" if mag == 1.0 else f"{mag:.10g}*"
        terms.append((sign, f"{coef}Y_{j}"))
    if not terms:
        text = "0"
    else:
        first_sign, first = terms[0]
        text = ("-" if first_sign == "-" else "") + first
        text += "".join(f" {s} {t}" for s, t in terms[1:])
    return f"{text} <= {float(d):.10g}"
