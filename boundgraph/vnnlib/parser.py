"""The VNN-LIB parser: :func:`parse_vnnlib` and :func:`parse_counterexample`.

``_Parser`` checks the declarations, turns terms into linear forms and formulas into disjunctive
normal form, and compiles the result into a :class:`~boundgraph.vnnlib.property.Property`. It
reads the S-expressions of :mod:`boundgraph.vnnlib.reader`; the supported subset ("the module
docstring" referred to below) is described in :mod:`boundgraph.vnnlib`.
"""
from __future__ import annotations

import itertools
import math
import os
import re

import numpy as np

from .property import Disjunct, Property, VnnlibError
from .reader import _List, _load, _read_sexprs

#: Default cap on the number of disjuncts the DNF expansion may produce.
MAX_DISJUNCTS = 10000

_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_VAR_RE = re.compile(r"([XY])_(\d+)\Z")
_IGNORED_COMMANDS = {"check-sat", "get-model", "exit", "set-logic", "set-info", "set-option"}
_COMPARISONS = {"<=", ">=", "<", ">", "="}


# ----------------------------------------------------------------------------------------------
# Constraint atoms produced by the DNF expansion


class _XBound:
    """``lo <= X_index <= hi`` (either side may be None)."""

    __slots__ = ("index", "lo", "hi", "line")

    def __init__(self, index: int, lo: float | None, hi: float | None, line: int):
        self.index, self.lo, self.hi, self.line = index, lo, hi, line


class _YRow:
    """``sum_j coefs[j] * Y_j <= d``."""

    __slots__ = ("coefs", "d", "line")

    def __init__(self, coefs: dict[int, float], d: float, line: int):
        self.coefs, self.d, self.line = coefs, d, line


class _Compiled:
    """A conjunction of atoms as arrays: box bounds (inf where unbounded) and rows."""

    __slots__ = ("lower", "upper", "C", "d", "lines")

    def __init__(self, lower, upper, C, d, lines):
        self.lower, self.upper, self.C, self.d, self.lines = lower, upper, C, d, lines


# ----------------------------------------------------------------------------------------------
# The parser


class _Parser:
    def __init__(self, path: str | None, max_disjuncts: int):
        self.strict = False  # whether any comparison is < or >
        self.path = path
        self.max_disjuncts = max_disjuncts
        self.vars: dict[str, tuple[str, int]] = {}
        self.n_inputs = 0
        self.n_outputs = 0

    def error(self, msg: str, line: int | None = None) -> VnnlibError:
        return VnnlibError(msg, self.path, line)

    # -- commands ---------------------------------------------------------------------------

    def parse(self, text: str) -> Property:
        forms = _read_sexprs(text, self.path)
        asserts: list[_List] = []
        for form in forms:
            if isinstance(form, str):
                raise self.error(
                    f"expected a command in parentheses at top level, got '{form}'", form.line
                )
            if not form or not isinstance(form[0], str):
                raise self.error(
                    "expected a command such as (assert ...) or (declare-const ...)", form.line
                )
            cmd = form[0]
            if cmd in ("declare-const", "declare-fun"):
                self.declare(form)
            elif cmd == "assert":
                if len(form) != 2:
                    raise self.error(
                        f"(assert ...) takes exactly one formula, got {len(form) - 1}", form.line
                    )
                asserts.append(form)
            elif cmd in _IGNORED_COMMANDS:
                continue
            else:
                raise self.error(
                    f"unknown command '{cmd}'; VNN-LIB supports declare-const, declare-fun and "
                    f"assert (and ignores {', '.join(sorted(_IGNORED_COMMANDS))})",
                    form.line,
                )
        self.check_declarations()
        try:
            return self.build(asserts)
        except RecursionError:
            raise self.error("expressions are nested too deeply to parse") from None

    def declare(self, form: _List) -> None:
        cmd = form[0]
        if cmd == "declare-const":
            ok = len(form) == 3 and isinstance(form[1], str) and isinstance(form[2], str)
            sort = form[2] if ok else None
        else:
            ok = (
                len(form) == 4
                and isinstance(form[1], str)
                and isinstance(form[2], _List)
                and len(form[2]) == 0
                and isinstance(form[3], str)
            )
            sort = form[3] if ok else None
        if not ok:
            shape = (
                "(declare-const NAME Real)" if cmd == "declare-const" else
                "(declare-fun NAME () Real)"
            )
            raise self.error(f"malformed {cmd}; expected {shape}", form.line)
        name = form[1]
        if sort != "Real":
            raise self.error(
                f"variable '{name}' is declared with sort '{sort}'; only Real is supported",
                form.line,
            )
        m = _VAR_RE.match(name)
        if not m:
            raise self.error(
                f"unsupported variable name '{name}'; inputs must be named X_<i> and outputs "
                "Y_<j>",
                form.line,
            )
        if name in self.vars:
            raise self.error(f"variable '{name}' is declared twice", form.line)
        self.vars[name] = (m.group(1), int(m.group(2)))

    def check_declarations(self) -> None:
        for kind, label in (("X", "input"), ("Y", "output")):
            idx = sorted(i for k, i in self.vars.values() if k == kind)
            if not idx:
                raise self.error(
                    f"no {label} variables declared (expected {kind}_0, {kind}_1, ...)"
                )
            missing = sorted(set(range(idx[-1] + 1)) - set(idx))
            if missing:
                shown = ", ".join(f"{kind}_{i}" for i in missing[:5])
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                raise self.error(
                    f"{label} variables must be numbered {kind}_0..{kind}_{idx[-1]} without gaps; "
                    f"missing {shown}{more}"
                )
            if kind == "X":
                self.n_inputs = len(idx)
            else:
                self.n_outputs = len(idx)

    # -- terms ------------------------------------------------------------------------------

    def number(self, t: str) -> float | None:
        """The value of a numeral atom, or None when ``t`` is not a number."""
        return float(t) if _NUMBER_RE.match(t) else None

    def linear(self, node, line: int) -> tuple[dict[tuple[str, int], float], float]:
        """Evaluate a term to ``(coefficients by variable, constant)``.

        ``line`` is the line of the enclosing list (atoms do not carry their own).
        """
        if isinstance(node, str):
            var = self.vars.get(node)
            if var is not None:
                return {var: 1.0}, 0.0
            value = self.number(node)
            if value is not None:
                return {}, value
            if _VAR_RE.match(node):
                raise self.error(f"undeclared variable '{node}'", line)
            raise self.error(f"unknown symbol '{node}' in an arithmetic term", line)
        line = node.line
        if not node or not isinstance(node[0], str):
            raise self.error("malformed arithmetic term", line)
        op = node[0]
        args = [self.linear(a, line) for a in node[1:]]
        if op == "+":
            if not args:
                raise self.error("(+) needs at least one argument", line)
            return _lin_sum(args)
        if op == "-":
            if not args:
                raise self.error("(-) needs at least one argument", line)
            if len(args) == 1:
                return _lin_scale(args[0], -1.0)
            return _lin_sum([args[0]] + [_lin_scale(a, -1.0) for a in args[1:]])
        if op == "*":
            if not args:
                raise self.error("(*) needs at least one argument", line)
            variable = [a for a in args if a[0]]
            if len(variable) > 1:
                raise self.error(
                    "nonlinear term: a product of variables ("
                    + " * ".join(_lin_text(a) for a in variable)
                    + "); only linear constraints are supported",
                    line,
                )
            scale = math.prod(a[1] for a in args if not a[0])
            return _lin_scale(variable[0], scale) if variable else ({}, scale)
        if op == "/":
            if len(args) < 2:
                raise self.error("(/) needs at least two arguments", line)
            denom = 1.0
            for a in args[1:]:
                if a[0]:
                    raise self.error("nonlinear term: division by a variable", line)
                denom *= a[1]
            if denom == 0.0:
                raise self.error("division by zero", line)
            return _lin_scale(args[0], 1.0 / denom)
        raise self.error(
            f"unsupported arithmetic operation '{op}'; only linear terms built with +, -, * and "
            "/ by constants are supported",
            line,
        )

    # -- formulas ---------------------------------------------------------------------------

    def dnf(self, node, line: int) -> list[tuple]:
        """Disjunctive normal form of a formula: a list of clauses (tuples of atoms)."""
        if isinstance(node, str):
            if node == "true":
                return [()]
            if node == "false":
                return []
            raise self.error(f"expected a constraint, got '{node}'", line)
        line = node.line
        if not node or not isinstance(node[0], str):
            raise self.error("expected a constraint such as (<= Y_0 Y_1)", line)
        op = node[0]
        if op in _COMPARISONS:
            atoms = self.compare(node)
            return [] if atoms is None else [tuple(atoms)]
        if op == "and":
            return self.conjoin([self.dnf(c, line) for c in node[1:]], line)
        if op == "or":
            out: list[tuple] = []
            for child in node[1:]:
                out.extend(self.dnf(child, line))
                if len(out) > self.max_disjuncts:
                    raise self.too_many(len(out), line)
            return out
        if op == "not":
            raise self.error(
                "negation (not ...) is not supported; write the opposite comparison instead",
                line,
            )
        raise self.error(
            f"unsupported constraint '{op}'; expected and, or, <=, >=, <, >, =", line
        )

    def conjoin(self, parts: list[list[tuple]], line: int) -> list[tuple]:
        fixed: list = []
        multi: list[list[tuple]] = []
        for p in parts:
            if not p:
                return []
            if len(p) == 1:
                fixed.extend(p[0])
            else:
                multi.append(p)
        total = math.prod(len(p) for p in multi)
        if total > self.max_disjuncts:
            raise self.too_many(total, line)
        result = [tuple(fixed)]
        for p in multi:
            result = [a + b for a in result for b in p]
        return result

    def too_many(self, n: int, line: int | None) -> VnnlibError:
        return self.error(
            f"the constraints expand to {n} disjuncts, more than the limit of "
            f"{self.max_disjuncts} (raise max_disjuncts in parse_vnnlib to allow it)",
            line,
        )

    def compare(self, node: _List) -> list | None:
        """Atoms of a (chained) comparison, or None when it is constant-false."""
        op = node[0]
        line = node.line
        self.strict |= op in ("<", ">")
        if len(node) < 3:
            raise self.error(f"comparison '{op}' needs at least two arguments", line)
        if len(node) == 3 and op != "=":
            fast = self.compare_simple(op, node[1], node[2], line)
            if fast is not None:
                return fast
        terms = [self.linear(a, line) for a in node[1:]]
        atoms = []
        for left, right in zip(terms, terms[1:]):
            diff = _lin_sum([left, _lin_scale(right, -1.0)])  # left - right
            if op in ("<=", "<"):
                forms = [diff]
            elif op in (">=", ">"):
                forms = [_lin_scale(diff, -1.0)]
            else:
                forms = [diff, _lin_scale(diff, -1.0)]
            for coefs, const in forms:  # sum coefs * v + const <= 0
                atom = self.classify(coefs, const, line)
                if atom is False:
                    return None
                if atom is not True:
                    atoms.append(atom)
        return atoms

    def compare_simple(self, op: str, a, b, line: int) -> list | None:
        """Fast path for ``(op VAR NUMBER)`` and ``(op NUMBER VAR)``; None if not that shape.

        Gives exactly what the general path gives (same normalisation, same rounding).
        """
        if not (isinstance(a, str) and isinstance(b, str)):
            return None
        var = self.vars.get(a)
        if var is not None:
            value = self.number(b)
            upper = op in ("<=", "<")  # VAR <= value
        else:
            var = self.vars.get(b)
            if var is None:
                return None
            value = self.number(a)
            upper = op in (">=", ">")  # value >= VAR
        if value is None:
            return None
        value += 0.0  # -0.0 -> 0.0
        kind, idx = var
        if kind == "X":
            return [_XBound(idx, None, value, line) if upper else _XBound(idx, value, None, line)]
        if upper:
            return [_YRow({idx: 1.0}, value, line)]
        return [_YRow({idx: -1.0}, -value + 0.0, line)]

    def classify(self, coefs, const, line):
        coefs = {k: c for k, c in coefs.items() if c != 0.0}
        xs = sorted(i for k, i in coefs if k == "X")
        ys = sorted(j for k, j in coefs if k == "Y")
        if xs and ys:
            raise self.error(
                "an inequality mixes input variables ("
                + ", ".join(f"X_{i}" for i in xs)
                + ") with output variables ("
                + ", ".join(f"Y_{j}" for j in ys)
                + "); input constraints must be bounds on single inputs",
                line,
            )
        if len(xs) > 1:
            raise self.error(
                "input constraint is not a simple bound: it involves "
                + ", ".join(f"X_{i}" for i in xs)
                + "; only box bounds such as (<= X_0 0.5) are supported on inputs",
                line,
            )
        if xs:
            i = xs[0]
            a = coefs[("X", i)]
            value = -const / a + 0.0  # + 0.0 turns -0.0 into 0.0
            if not math.isfinite(value):
                raise self.error(f"bound on X_{i} is not finite", line)
            return _XBound(i, None, value, line) if a > 0 else _XBound(i, value, None, line)
        if ys:
            return _YRow({j: coefs[("Y", j)] for j in ys}, -const + 0.0, line)
        return const <= 0.0  # constant comparison: True (drop) or False (clause is empty)

    # -- assembling the property ----------------------------------------------------------------

    def compile(self, clause: tuple) -> _Compiled:
        lower = np.full(self.n_inputs, -np.inf)
        upper = np.full(self.n_inputs, np.inf)
        rows = []
        for atom in clause:
            if isinstance(atom, _XBound):
                if atom.lo is not None and atom.lo > lower[atom.index]:
                    lower[atom.index] = atom.lo
                if atom.hi is not None and atom.hi < upper[atom.index]:
                    upper[atom.index] = atom.hi
            else:
                rows.append(atom)
        C = np.zeros((len(rows), self.n_outputs))
        d = np.empty(len(rows))
        for r, row in enumerate(rows):
            for j, c in row.coefs.items():
                C[r, j] = c
            d[r] = row.d
        lines = sorted({a.line for a in clause})
        return _Compiled(lower, upper, C, d, lines)

    def build(self, asserts: list[_List]) -> Property:
        fixed: list = []
        groups: list[tuple[int, list[_Compiled]]] = []
        empty = False
        for form in asserts:
            clauses = self.dnf(form[1], form.line)
            if not clauses:
                empty = True  # keep going so every assert is still checked
            elif len(clauses) == 1:
                fixed.extend(clauses[0])
            else:
                groups.append((form.line, clauses))
        total = math.prod(len(c) for _, c in groups)
        if total > self.max_disjuncts:
            raise self.too_many(total, None)
        base = self.compile(tuple(fixed))
        compiled_groups = [[self.compile(c) for c in clauses] for _, clauses in groups]
        if empty:
            return Property(self.n_inputs, self.n_outputs, [], self.path, self.strict)

        disjuncts: list[Disjunct] = []
        for k, combo in enumerate(itertools.product(*compiled_groups)):
            parts = (base,) + combo
            lower = np.max([p.lower for p in parts], axis=0) if combo else base.lower.copy()
            upper = np.min([p.upper for p in parts], axis=0) if combo else base.upper.copy()
            self.check_bounded(lower, upper, k, total, groups, combo)
            if np.any(lower > upper):
                continue  # empty box: contributes nothing to the unsafe region
            C = np.concatenate([p.C for p in parts], axis=0)
            d = np.concatenate([p.d for p in parts], axis=0)
            disjuncts.append(Disjunct(lower, upper, C, d))
        return Property(self.n_inputs, self.n_outputs, disjuncts, self.path, self.strict)

    def check_bounded(self, lower, upper, k, total, groups, combo) -> None:
        for side, arr, inf in (("lower", lower, -np.inf), ("upper", upper, np.inf)):
            missing = np.flatnonzero(arr == inf)
            if missing.size == 0:
                continue
            names = ", ".join(f"X_{i}" for i in missing[:5])
            if missing.size > 5:
                names += f" and {missing.size - 5} more"
            msg = f"input {names} has no {side} bound"
            if total > 1:
                origin = "; ".join(
                    f"alternative at line{'s' if len(c.lines) > 1 else ''} "
                    f"{_span(c.lines)} of the (or ...) asserted at line {line}"
                    for (line, _), c in zip(groups, combo)
                )
                msg += f" in disjunct {k} of {total} ({origin})"
            msg += "; every input needs both a lower and an upper bound (a box)"
            raise self.error(msg)


def _span(lines: list[int]) -> str:
    if not lines:
        return "?"
    return str(lines[0]) if lines[0] == lines[-1] else f"{lines[0]}-{lines[-1]}"


def _lin_sum(terms):
    coefs: dict = {}
    const = 0.0
    for c, k in terms:
        for v, a in c.items():
            coefs[v] = coefs.get(v, 0.0) + a
        const += k
    return coefs, const


def _lin_scale(term, s: float):
    c, k = term
    return {v: a * s for v, a in c.items()}, k * s


def _lin_text(term) -> str:
    c, _ = term
    names = [f"{kind}_{i}" for kind, i in c]
    return names[0] if len(names) == 1 else "(" + " + ".join(names) + ")"


# ----------------------------------------------------------------------------------------------
# Public entry points


def parse_vnnlib(
    text_or_path: str | os.PathLike, *, max_disjuncts: int = MAX_DISJUNCTS
) -> Property:
    """Parse a VNN-LIB property into a :class:`Property` (a union of unsafe disjuncts).

    ``text_or_path`` is a path (``str`` or ``os.PathLike``) to a ``.vnnlib`` file, optionally
    gzip-compressed (``.vnnlib.gz``, detected from the content), or the VNN-LIB text itself.

    Convention: every disjunct ``k`` is ``{x : lower_k <= x <= upper_k, C_k f(x) <= d_k}``, and
    ``C y <= d`` is the UNSAFE condition (e.g. ``(assert (>= Y_0 Y_1))`` becomes the row
    ``-Y_0 + Y_1 <= 0``). The property holds (``unsat``) iff no disjunct contains a point; a
    verifier proves this by showing that for every disjunct ``min over the box of
    (C_k f(x) - d_k)[i] > 0`` for some row ``i``. Strict ``<``/``>`` are read as ``<=``/``>=``
    (the conservative choice for proving ``unsat``). Top-level asserts are conjoined and
    ``or`` alternatives expanded (their product when several ``or`` are conjoined); the
    expansion may produce at most ``max_disjuncts`` disjuncts.

    Raises :class:`VnnlibError` (a ``ValueError``) naming the file and, where possible, the line
    for anything outside the supported subset (see the module docstring).
    """
    if max_disjuncts < 1:
        raise ValueError(f"max_disjuncts must be at least 1, got {max_disjuncts}")
    text, path = _load(text_or_path)
    return _Parser(path, max_disjuncts).parse(text)


def parse_counterexample(text_or_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a VNN-COMP counterexample ``((X_0 v) ... (Y_0 v) ...)`` into ``(x, y)`` arrays.

    Accepts a path (also gzip-compressed) or the text. A leading ``sat`` or ``violated`` word
    (as in VNN-COMP result files) is skipped. Values may be numbers or constant terms such as
    ``(- 0.5)``. Indices of ``X_i`` and ``Y_j`` must run from 0 without gaps. Check the result
    with :meth:`Property.is_counterexample`.
    """
    text, path = _load(text_or_path)
    forms = _read_sexprs(text, path)
    if forms and isinstance(forms[0], str) and forms[0] in ("sat", "violated"):
        forms = forms[1:]
    if len(forms) != 1 or not isinstance(forms[0], _List):
        raise VnnlibError(
            "a counterexample must be one list of (NAME value) pairs: ((X_0 v) ... (Y_0 v) ...)",
            path,
            forms[1].line if len(forms) > 1 else (forms[0].line if forms else None),
        )
    parser = _Parser(path, 1)
    values: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for pair in forms[0]:
        if not (isinstance(pair, _List) and len(pair) == 2 and isinstance(pair[0], str)):
            raise VnnlibError(
                "expected a (NAME value) pair", path, getattr(pair, "line", forms[0].line)
            )
        m = _VAR_RE.match(pair[0])
        if not m:
            raise VnnlibError(f"unexpected variable name '{pair[0]}'", path, pair.line)
        coefs, value = parser.linear(pair[1], pair.line)
        if coefs:
            raise VnnlibError(f"value of {pair[0]} is not a constant", path, pair.line)
        idx = int(m.group(2))
        if idx in values[m.group(1)]:
            raise VnnlibError(f"{pair[0]} is given twice", path, pair.line)
        values[m.group(1)][idx] = value
    out = []
    for kind in ("X", "Y"):
        vals = values[kind]
        if not vals or sorted(vals) != list(range(len(vals))):
            raise VnnlibError(
                f"the counterexample must give {kind}_0 .. {kind}_n without gaps", path
            )
        out.append(np.array([vals[i] for i in range(len(vals))], dtype=np.float64))
    return out[0], out[1]
