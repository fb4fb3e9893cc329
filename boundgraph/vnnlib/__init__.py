"""VNN-LIB property parser.

VNN-LIB is the subset of SMT-LIB 2 that VNN-COMP uses to state verification problems for a
network ``y = f(x)``. A file declares the inputs ``X_0 .. X_{n-1}`` and the outputs
``Y_0 .. Y_{m-1}`` and asserts constraints whose conjunction describes the **unsafe** region:
the answer is ``sat`` when some input satisfies every assert (a counterexample exists) and
``unsat`` when none does (the property holds).

:func:`parse_vnnlib` turns such a file into a :class:`Property`: a union of :class:`Disjunct`
objects, each an input box plus a set of linear output constraints::

    unsafe region = union over k of { x : lower_k <= x <= upper_k  and  C_k @ f(x) <= d_k }

(all rows of ``C_k y <= d_k`` at once). A verifier proves ``unsat`` by showing, for **every**
disjunct ``k``, that for **some** row ``i`` the minimum over the box of ``(C_k f(x) - d_k)[i]``
is ``> 0``; a single input in a box with ``C_k f(x) <= d_k`` is a counterexample (``sat``).

Supported:

* ``(declare-const NAME Real)`` and ``(declare-fun NAME () Real)`` for ``X_i`` / ``Y_j``
  (indices must run 0..n-1 without gaps); comments (``;``); ``check-sat``, ``get-model``,
  ``exit``, ``set-logic``, ``set-info`` and ``set-option`` are accepted and ignored.
* ``(assert F)`` where ``F`` is built from ``and``, ``or`` (nested freely), ``true``, ``false``
  and the comparisons ``<=``, ``>=``, ``<``, ``>``, ``=`` (also SMT-LIB chains such as
  ``(<= a b c)``) between linear terms: numbers (``0.5``, ``-3``, ``1e-3``, ``-2.5E+01``),
  variables, ``(+ ...)``, ``(- ...)`` (unary and n-ary), ``(* ...)`` with at most one
  non-constant factor and ``(/ t c)`` with constant ``c``.
* Several asserts are a conjunction. The formula is expanded into disjunctive normal form; a
  constraint on inputs (asserted at top level or inside an ``or`` alternative) must be a bound on
  one input variable (``(<= X_0 0.6)``, ``(<= 0.1 X_0)``, ``(>= (* 2 X_0) 1)``); a constraint
  on outputs may be any linear inequality over the ``Y_j``. Each disjunct must bound every input
  from both sides; several bounds on one input intersect.
* Strict comparisons ``<`` and ``>`` are read as ``<=`` and ``>=``. This replaces the unsafe
  region by its closure, which only makes it larger, so an ``unsat`` proved for the parsed
  property is an ``unsat`` of the file. ``Property.strict`` records that the file had one; the
  verifier then accepts only counterexamples that satisfy every inequality strictly
  (``Disjunct.contains(..., strict=True)``), so a point on such a boundary is never a ``sat``.
* Disjuncts that are empty (an input box with ``lower > upper``, or a constant-false output
  constraint such as ``(<= 1 0)``) are dropped; if all are dropped the property has no disjuncts
  and is trivially ``unsat``. A disjunct without output constraints (``C`` with 0 rows) means the
  whole box is unsafe.

String literals and ``|quoted symbols|`` must end on the line where they start.

Anything else (nonlinear terms, ``not``, undeclared variables, input constraints that are not
single-variable bounds, inputs and outputs in one inequality, unbalanced parentheses, unknown
commands, inputs left unbounded) raises :class:`VnnlibError`, whose message names the file and,
where it can, the line.

:func:`parse_counterexample` reads the VNN-COMP counterexample format
``((X_0 v) ... (Y_0 v) ...)``.

The package is split in three modules: :mod:`boundgraph.vnnlib.property` (the compiled model:
:class:`VnnlibError`, :class:`Disjunct`, :class:`Property`), :mod:`boundgraph.vnnlib.reader`
(loading a file or text and reading it into S-expressions) and
:mod:`boundgraph.vnnlib.parser` (the parser of those S-expressions: :func:`parse_vnnlib`,
:func:`parse_counterexample`).
"""
from .parser import MAX_DISJUNCTS, parse_counterexample, parse_vnnlib
from .property import Disjunct, Property, VnnlibError

__all__ = [
    "VnnlibError",
    "Disjunct",
    "Property",
    "parse_vnnlib",
    "parse_counterexample",
    "MAX_DISJUNCTS",
]
