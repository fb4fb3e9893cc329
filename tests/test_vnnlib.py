"""Tests of the VNN-LIB parser (boundgraph.vnnlib)."""
from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from boundgraph.vnnlib import (
    Disjunct,
    Property,
    VnnlibError,
    parse_counterexample,
    parse_vnnlib,
)

VNNCOMP = Path(os.environ.get("BOUNDGRAPH_VNNCOMP_DIR", "/work/shared/vnncomp"))
needs_vnncomp = pytest.mark.skipif(
    not (VNNCOMP / "acasxu" / "vnnlib").is_dir(), reason="VNN-COMP files not available"
)


def header(n_in: int, n_out: int) -> str:
    decls = [f"(declare-const X_{i} Real)" for i in range(n_in)]
    decls += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    return "\n".join(decls) + "\n"


def box(bounds) -> str:
    return "\n".join(
        f"(assert (>= X_{i} {lo}))\n(assert (<= X_{i} {hi}))" for i, (lo, hi) in enumerate(bounds)
    ) + "\n"


def only(prop: Property) -> Disjunct:
    assert len(prop.disjuncts) == 1
    return prop.disjuncts[0]


def rows(dj: Disjunct) -> set[tuple]:
    """The constraint rows as a set of (C row, d) tuples, for order-free comparison."""
    return {(tuple(dj.C[i]), float(dj.d[i])) for i in range(dj.n_constraints)}


# ---------------------------------------------------------------------------------------------
# Hand-written properties


def test_box_and_single_output_bound_give_one_disjunct_with_unsafe_row():
    text = header(2, 2) + box([(-0.3, 0.6), (0, 1)]) + "(assert (>= Y_0 3.99))\n"
    prop = parse_vnnlib(text)
    assert (prop.n_inputs, prop.n_outputs, prop.path) == (2, 2, None)
    dj = only(prop)
    np.testing.assert_array_equal(dj.lower, [-0.3, 0.0])
    np.testing.assert_array_equal(dj.upper, [0.6, 1.0])
    # Y_0 >= 3.99  <=>  -Y_0 <= -3.99
    np.testing.assert_array_equal(dj.C, [[-1.0, 0.0]])
    np.testing.assert_array_equal(dj.d, [-3.99])
    assert dj.C.dtype == np.float64 and prop.is_single_box


def test_output_comparison_between_outputs_is_normalised_to_C_y_le_d():
    text = header(1, 2) + box([(0, 1)]) + "(assert (>= Y_0 Y_1))\n"
    dj = only(parse_vnnlib(text))
    np.testing.assert_array_equal(dj.C, [[-1.0, 1.0]])  # -Y_0 + Y_1 <= 0
    np.testing.assert_array_equal(dj.d, [0.0])
    assert not np.signbit(dj.d).any()


def test_reversed_comparisons_bound_inputs_and_outputs_the_same_way():
    text = header(2, 2) + """
        (assert (<= 0.1 X_0))   ; lower bound written with the constant first
        (assert (>= 0.6 X_0))   ; upper bound
        (assert (<= -1 X_1))
        (assert (>= 2 X_1))
        (assert (<= 3 Y_1))     ; Y_1 >= 3
    """
    dj = only(parse_vnnlib(text))
    np.testing.assert_array_equal(dj.lower, [0.1, -1.0])
    np.testing.assert_array_equal(dj.upper, [0.6, 2.0])
    np.testing.assert_array_equal(dj.C, [[0.0, -1.0]])
    np.testing.assert_array_equal(dj.d, [-3.0])


def test_comments_blank_lines_and_ignored_smtlib_commands_are_skipped():
    text = """; a comment at the top
    (set-logic QF_LRA) ; trailing comment
    (declare-const X_0 Real)   ; input
    (declare-fun Y_0 () Real)  ; output via declare-fun

    ;;;; (assert (<= X_0 100))  commented-out assert
    (assert (<= X_0 1)) (assert (>= X_0 0))
    (assert (<= Y_0 0.5))
    (check-sat)
    (get-model)
    (exit)
    """
    dj = only(parse_vnnlib(text))
    np.testing.assert_array_equal(dj.upper, [1.0])
    np.testing.assert_array_equal(dj.C, [[1.0]])
    np.testing.assert_array_equal(dj.d, [0.5])


def test_scientific_notation_and_negative_numbers_are_parsed_exactly():
    text = header(3, 1) + """
        (assert (>= X_0 1e-3)) (assert (<= X_0 2.5E+01))
        (assert (>= X_1 -2.5E+01)) (assert (<= X_1 -1.5e-2))
        (assert (>= X_2 -.5)) (assert (<= X_2 3.))
        (assert (<= Y_0 -7E0))
    """
    dj = only(parse_vnnlib(text))
    np.testing.assert_array_equal(dj.lower, [1e-3, -25.0, -0.5])
    np.testing.assert_array_equal(dj.upper, [25.0, -0.015, 3.0])
    np.testing.assert_array_equal(dj.d, [-7.0])


def test_linear_output_expressions_are_collected_into_one_row_each():
    text = header(1, 3) + box([(0, 1)]) + """
        (assert (<= (+ Y_0 (* 2.0 Y_1)) 1))          ; Y_0 + 2 Y_1 <= 1
        (assert (>= (- Y_0 Y_1) 0.5))                ; -Y_0 + Y_1 <= -0.5
        (assert (<= (* -1 Y_2) (+ Y_0 3)))           ; -Y_0 - Y_2 <= 3
        (assert (<= (- Y_2) (/ Y_1 4)))              ; -0.25 Y_1 - Y_2 <= 0
        (assert (>= (+ Y_0 Y_0 1) (* 3 (- Y_1 2))))  ; -2 Y_0 + 3 Y_1 <= 7
    """
    dj = only(parse_vnnlib(text))
    assert rows(dj) == {
        ((1.0, 2.0, 0.0), 1.0),
        ((-1.0, 1.0, 0.0), -0.5),
        ((-1.0, 0.0, -1.0), 3.0),
        ((0.0, -0.25, -1.0), 0.0),
        ((-2.0, 3.0, 0.0), 7.0),
    }


def test_scaled_single_input_constraints_are_box_bounds():
    text = header(1, 1) + """
        (assert (>= (* 2 X_0) 1))         ; X_0 >= 0.5
        (assert (<= (- X_0) 1))           ; X_0 >= -1 (weaker, ignored)
        (assert (>= (* -4 X_0) -8))       ; X_0 <= 2
        (assert (<= Y_0 0))
    """
    dj = only(parse_vnnlib(text))
    np.testing.assert_array_equal(dj.lower, [0.5])
    np.testing.assert_array_equal(dj.upper, [2.0])


def test_strict_inequalities_are_read_as_non_strict():
    strict = header(1, 2) + "(assert (> X_0 0)) (assert (< X_0 1)) (assert (< Y_0 Y_1))"
    loose = header(1, 2) + "(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (<= Y_0 Y_1))"
    a, b = only(parse_vnnlib(strict)), only(parse_vnnlib(loose))
    for name in ("lower", "upper", "C", "d"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_equality_gives_a_point_bound_on_inputs_and_two_rows_on_outputs():
    text = header(1, 2) + "(assert (= X_0 0.25)) (assert (= Y_0 Y_1))"
    dj = only(parse_vnnlib(text))
    np.testing.assert_array_equal(dj.lower, [0.25])
    np.testing.assert_array_equal(dj.upper, [0.25])
    assert rows(dj) == {((1.0, -1.0), 0.0), ((-1.0, 1.0), 0.0)}


def test_chained_comparison_means_each_adjacent_pair():
    text = header(1, 1) + "(assert (<= -1 X_0 2)) (assert (<= Y_0 5))"
    dj = only(parse_vnnlib(text))
    np.testing.assert_array_equal([dj.lower[0], dj.upper[0]], [-1.0, 2.0])


def test_conjoined_output_asserts_form_one_disjunct_with_all_rows():
    text = header(1, 3) + box([(0, 1)]) + """
        (assert (<= Y_0 Y_1))
        (assert (and (<= Y_0 Y_2) (and (>= Y_1 -1) (and))))   ; nested and, empty and is true
    """
    dj = only(parse_vnnlib(text))
    assert rows(dj) == {((1.0, -1.0, 0.0), 0.0), ((1.0, 0.0, -1.0), 0.0), ((0.0, -1.0, 0.0), 1.0)}


def test_repeated_bounds_on_one_input_intersect():
    text = header(1, 1) + """
        (assert (>= X_0 -1)) (assert (>= X_0 0.25)) (assert (<= X_0 3)) (assert (<= X_0 2))
        (assert (<= Y_0 0))
    """
    dj = only(parse_vnnlib(text))
    assert (dj.lower[0], dj.upper[0]) == (0.25, 2.0)


def test_output_disjunction_expands_into_disjuncts_sharing_the_box():
    text = header(2, 3) + box([(0, 1), (-1, 1)]) + """
        (assert (or
            (and (>= Y_1 Y_0) (>= Y_1 Y_2))
            (and (>= Y_2 Y_0))
        ))
    """
    prop = parse_vnnlib(text)
    assert len(prop.disjuncts) == 2 and prop.is_single_box
    assert rows(prop.disjuncts[0]) == {((1.0, -1.0, 0.0), 0.0), ((0.0, -1.0, 1.0), 0.0)}
    assert rows(prop.disjuncts[1]) == {((1.0, 0.0, -1.0), 0.0)}
    for dj in prop.disjuncts:
        np.testing.assert_array_equal(dj.lower, [0.0, -1.0])
        np.testing.assert_array_equal(dj.upper, [1.0, 1.0])
    assert len(prop.by_box()) == 1 and len(prop.by_box()[0][2]) == 2


def test_several_disjunctions_expand_to_their_product_in_order():
    text = header(1, 2) + box([(0, 1)]) + """
        (assert (or (<= Y_0 1) (<= Y_0 2)))
        (assert (or (<= Y_1 10) (<= Y_1 20) (<= Y_1 30)))
    """
    prop = parse_vnnlib(text)
    assert len(prop.disjuncts) == 6
    got = [tuple(dj.d) for dj in prop.disjuncts]
    assert got == [(1, 10), (1, 20), (1, 30), (2, 10), (2, 20), (2, 30)]


def test_input_boxes_inside_disjunction_give_each_disjunct_its_own_box():
    text = header(2, 2) + """
        (assert (<= X_1 1))                 ; shared bound outside the or
        (assert (or
            (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= Y_0 Y_1))
            (and (>= X_0 1) (<= X_0 2) (>= X_1 -1) (<= X_1 0.5) (<= Y_1 Y_0))
        ))
    """
    prop = parse_vnnlib(text)
    assert len(prop.disjuncts) == 2 and not prop.is_single_box
    a, b = prop.disjuncts
    np.testing.assert_array_equal(a.lower, [0.0, 0.0])
    np.testing.assert_array_equal(a.upper, [1.0, 1.0])
    np.testing.assert_array_equal(b.lower, [1.0, -1.0])
    np.testing.assert_array_equal(b.upper, [2.0, 0.5])
    np.testing.assert_array_equal(a.C, [[1.0, -1.0]])
    np.testing.assert_array_equal(b.C, [[-1.0, 1.0]])
    assert [len(g[2]) for g in prop.by_box()] == [1, 1]


def test_or_of_boxes_conjoined_with_or_of_outputs_pairs_every_box_with_every_output():
    text = header(1, 2) + """
        (assert (or (and (>= X_0 0) (<= X_0 1)) (and (>= X_0 2) (<= X_0 3))))
        (assert (or (and (<= Y_0 Y_1)) (and (<= Y_1 Y_0))))
    """
    prop = parse_vnnlib(text)
    assert len(prop.disjuncts) == 4
    assert len(prop.by_box()) == 2 and [len(g[2]) for g in prop.by_box()] == [2, 2]


def test_disjunct_without_output_constraint_means_whole_box_is_unsafe():
    text = header(2, 3) + box([(0, 1), (0, 1)])
    dj = only(parse_vnnlib(text))
    assert dj.C.shape == (0, 3) and dj.d.shape == (0,)
    assert dj.n_constraints == 0
    assert parse_vnnlib(text).is_counterexample([0.5, 0.5], [9.0, 9.0, 9.0])


def test_empty_boxes_and_constant_false_alternatives_are_dropped():
    text = header(1, 1) + """
        (assert (or
            (and (>= X_0 2) (<= X_0 1) (<= Y_0 0))    ; empty box
            (and (>= X_0 0) (<= X_0 1) (<= 1 0))      ; constant false
            (and (>= X_0 0) (<= X_0 1) (<= 0 1) (<= Y_0 Y_0) (<= Y_0 5))  ; trivial rows dropped
        ))
    """
    prop = parse_vnnlib(text)
    dj = only(prop)
    np.testing.assert_array_equal(dj.C, [[1.0]])
    np.testing.assert_array_equal(dj.d, [5.0])


def test_all_alternatives_empty_gives_property_without_disjuncts():
    text = header(1, 1) + box([(0, 1)]) + "(assert (or (<= 1 0) false))"
    prop = parse_vnnlib(text)
    assert prop.disjuncts == [] and not prop.is_single_box
    assert not prop.is_counterexample([0.5], [0.0])
    assert "empty" in str(prop)


def test_path_str_pathlike_and_gzip_are_accepted(tmp_path):
    text = header(1, 1) + box([(0, 1)]) + "(assert (<= Y_0 0))\n"
    plain = tmp_path / "p.vnnlib"
    plain.write_text(text)
    packed = tmp_path / "p.vnnlib.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    for arg in (plain, str(plain), packed, str(packed)):
        prop = parse_vnnlib(arg)
        assert prop.path == os.fspath(arg)
        np.testing.assert_array_equal(only(prop).d, [0.0])


def test_disjunct_contains_and_property_is_counterexample_check_box_and_rows():
    text = header(1, 2) + box([(0, 1)]) + "(assert (or (<= Y_0 Y_1) (>= Y_0 10)))"
    prop = parse_vnnlib(text)
    assert prop.is_counterexample([0.5], [1.0, 2.0])       # first alternative
    assert prop.is_counterexample([0.5], [11.0, 2.0])      # second alternative
    assert not prop.is_counterexample([0.5], [3.0, 2.0])   # neither
    assert not prop.is_counterexample([1.5], [1.0, 2.0])   # outside the box
    assert prop.is_counterexample([1.0 + 1e-7], [2.0 + 1e-7, 2.0], tol=1e-6)


def test_summary_names_sizes_and_readable_constraints():
    text = header(1, 2) + box([(0, 1)]) + "(assert (>= Y_0 (* 2 Y_1)))"
    s = str(parse_vnnlib(text))
    assert "1 inputs, 2 outputs, 1 disjunct(s)" in s
    assert "X_0 in [0, 1]" in s
    assert "-Y_0 + 2*Y_1 <= 0" in s
    assert "Property(n_inputs=1" in repr(parse_vnnlib(text))


def test_disjunct_rejects_inconsistent_shapes():
    with pytest.raises(ValueError, match="C must be 2-D"):
        Disjunct(np.zeros(2), np.ones(2), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="same length"):
        Disjunct(np.zeros(2), np.ones(3), np.zeros((1, 2)), np.zeros(1))


# ---------------------------------------------------------------------------------------------
# Malformed input: one VnnlibError naming the file and the line


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "bad.vnnlib"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "body, line, fragment",
    [
        ("(assert (<= (* Y_0 Y_1) 1))", 4, "nonlinear term"),
        ("(assert (<= (/ Y_0 Y_1) 1))", 4, "division by a variable"),
        ("(assert (<= Y_7 1))", 4, "undeclared variable 'Y_7'"),
        ("(assert (<= X_9 1))", 4, "undeclared variable 'X_9'"),
        ("(assert (<= X_0 X_1))", 4, "not a simple bound"),
        ("(assert (<= (+ X_0 X_1) 1))", 4, "not a simple bound"),
        ("(assert (<= X_0 Y_0))", 4, "mixes input variables (X_0) with output variables (Y_0)"),
        ("(assert (not (<= Y_0 1)))", 4, "negation (not ...) is not supported"),
        ("(assert (=> (<= Y_0 1) (<= Y_1 1)))", 4, "unsupported constraint '=>'"),
        ("(assert (<= (exp Y_0) 1))", 4, "unsupported arithmetic operation 'exp'"),
        ("(assert (<= Y_0 foo))", 4, "unknown symbol 'foo'"),
        ("(assert (<= Y_0 1) (<= Y_1 1))", 4, "exactly one formula"),
        ("(assert (<= Y_0))", 4, "needs at least two arguments"),
        ("(define-fun f () Real 1.0)", 4, "unknown command 'define-fun'"),
        ("oops", 4, "expected a command in parentheses"),
        ("(assert (<= Y_0 1)", 4, "the '(' opened at line 4 is never closed"),
        ("(assert (<= Y_0 1)))", 4, "')' without a matching '('"),
        ("(assert (<= Y_0 (/ 1 0)))", 4, "division by zero"),
        ("(declare-const X_0 Real)", 4, "declared twice"),
        ("(declare-const Z_0 Real)", 4, "unsupported variable name 'Z_0'"),
        ("(declare-const X_2 Int)", 4, "only Real is supported"),
        ('(set-info :source "unterminated)', 4, "unexpected character"),
    ],
)
def test_malformed_file_raises_vnnlib_error_naming_file_line_and_problem(
    tmp_path, body, line, fragment
):
    # line 1-3: declarations and the X bounds; the faulty form is on line 4
    text = (
        "(declare-const X_0 Real)\n(declare-const X_1 Real)\n"
        "(declare-const Y_0 Real) (declare-const Y_1 Real) "
        "(assert (<= -1 X_0 1)) (assert (<= -1 X_1 1))\n" + body + "\n"
    )
    path = write(tmp_path, text)
    with pytest.raises(VnnlibError) as info:
        parse_vnnlib(path)
    msg = str(info.value)
    assert fragment in msg
    assert str(path) in msg and f"line {line}" in msg
    assert info.value.line == line and info.value.path == str(path)
    assert isinstance(info.value, ValueError)


def test_missing_input_bound_is_reported_with_the_input_name(tmp_path):
    path = write(tmp_path, header(2, 1) + "(assert (>= X_0 0)) (assert (<= X_0 1))\n"
                 "(assert (>= X_1 0))\n(assert (<= Y_0 0))")
    with pytest.raises(VnnlibError, match=r"bad\.vnnlib'.*input X_1 has no upper bound"):
        parse_vnnlib(path)


def test_missing_input_bound_inside_an_or_alternative_names_its_lines():
    text = header(1, 1) + """(assert (or
        (and (>= X_0 0) (<= X_0 1) (<= Y_0 0))
        (and (>= X_0 1) (<= Y_0 0))
    ))"""
    with pytest.raises(VnnlibError) as info:
        parse_vnnlib(text)
    msg = str(info.value)
    assert msg.startswith("VNN-LIB text")
    assert "input X_0 has no upper bound in disjunct 1 of 2" in msg
    assert "alternative at line 5 of the (or ...) asserted at line 3" in msg


def test_gap_in_declared_inputs_is_rejected():
    text = "(declare-const X_0 Real) (declare-const X_2 Real) (declare-const Y_0 Real)"
    with pytest.raises(VnnlibError, match=r"without gaps; missing X_1"):
        parse_vnnlib(text)


def test_missing_output_declaration_is_rejected():
    with pytest.raises(VnnlibError, match="no output variables declared"):
        parse_vnnlib("(declare-const X_0 Real) (assert (<= 0 X_0 1))")


def test_too_many_disjuncts_raise_a_clear_error():
    text = header(1, 1) + box([(0, 1)]) + "(assert (or (<= Y_0 1) (<= Y_0 2) (<= Y_0 3)))\n" * 3
    assert len(parse_vnnlib(text).disjuncts) == 27
    with pytest.raises(VnnlibError, match="expand to 27 disjuncts, more than the limit of 20"):
        parse_vnnlib(text, max_disjuncts=20)
    nested = header(1, 1) + box([(0, 1)]) + (
        "(assert (and" + " (or (<= Y_0 1) (<= Y_0 2))" * 5 + "))"
    )
    with pytest.raises(VnnlibError, match="32 disjuncts.*limit of 10"):
        parse_vnnlib(nested, max_disjuncts=10)


def test_missing_file_is_a_vnnlib_error(tmp_path):
    with pytest.raises(VnnlibError, match="cannot read the file"):
        parse_vnnlib(tmp_path / "nope.vnnlib")
    with pytest.raises(VnnlibError, match="nope.vnnlib"):
        parse_vnnlib(str(tmp_path / "nope.vnnlib"))


# ---------------------------------------------------------------------------------------------
# Real VNN-COMP files


@needs_vnncomp
@pytest.mark.parametrize(
    "path", sorted((VNNCOMP / "acasxu" / "vnnlib").glob("*.vnnlib")), ids=lambda p: p.name
)
def test_acasxu_property_parses_with_5_inputs_and_5_outputs(path):
    prop = parse_vnnlib(path)
    assert (prop.n_inputs, prop.n_outputs) == (5, 5)
    assert prop.disjuncts
    for dj in prop.disjuncts:
        assert np.all(np.isfinite(dj.lower)) and np.all(dj.lower <= dj.upper)
        assert dj.C.shape[1] == 5 and dj.n_constraints >= 1


@needs_vnncomp
def test_acasxu_property_1_has_the_documented_box_and_row():
    dj = only(parse_vnnlib(VNNCOMP / "acasxu" / "vnnlib" / "prop_1.vnnlib"))
    np.testing.assert_array_equal(dj.lower, [0.6, -0.5, -0.5, 0.45, -0.5])
    np.testing.assert_array_equal(dj.upper, [0.679857769, 0.5, 0.5, 0.5, -0.45])
    np.testing.assert_array_equal(dj.C, [[-1.0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(dj.d, [-3.991125645861615])


@needs_vnncomp
def test_acasxu_property_6_has_two_boxes_times_four_output_alternatives():
    prop = parse_vnnlib(VNNCOMP / "acasxu" / "vnnlib" / "prop_6.vnnlib")
    assert len(prop.disjuncts) == 8 and not prop.is_single_box
    groups = prop.by_box()
    assert len(groups) == 2 and [len(g[2]) for g in groups] == [4, 4]
    assert groups[0][0][1] == 0.11140846 and groups[1][1][1] == -0.11140846


@needs_vnncomp
@pytest.mark.parametrize(
    "name, n_in, n_out, box_lo, box_hi, C, d",
    [
        ("test_nano.vnnlib", 1, 1, [-1.0], [1.0], [[1.0]], [-1.0]),
        ("test_tiny.vnnlib", 1, 1, [-1.0], [1.0], [[-1.0]], [-100.0]),
        ("test_small.vnnlib", 1, 1, [-1.0], [1.0], [[-1.0]], [-100.0]),
    ],
)
def test_vnncomp_test_folder_toy_properties_parse(name, n_in, n_out, box_lo, box_hi, C, d):
    prop = parse_vnnlib(VNNCOMP / "test" / name)
    assert (prop.n_inputs, prop.n_outputs) == (n_in, n_out)
    dj = only(prop)
    np.testing.assert_array_equal(dj.lower, box_lo)
    np.testing.assert_array_equal(dj.upper, box_hi)
    np.testing.assert_array_equal(dj.C, C)
    np.testing.assert_array_equal(dj.d, d)


@needs_vnncomp
def test_vnncomp_test_folder_every_property_parses():
    files = sorted((VNNCOMP / "test").glob("*.vnnlib"))
    assert files
    for path in files:
        prop = parse_vnnlib(path)
        assert prop.disjuncts and prop.path == str(path)


@needs_vnncomp
def test_mnist_property_parses_with_784_inputs_and_nine_target_disjuncts():
    files = sorted((VNNCOMP / "mnist_fc" / "vnnlib").glob("*.vnnlib"))
    if not files:
        pytest.skip("no mnist_fc properties")
    prop = parse_vnnlib(files[0])
    assert (prop.n_inputs, prop.n_outputs) == (784, 10)
    assert prop.is_single_box and len(prop.disjuncts) == 9


@needs_vnncomp
def test_recorded_counterexamples_lie_in_the_unsafe_region_of_their_property():
    with open(VNNCOMP / "expected.csv", newline="") as fh:
        sat = [r for r in csv.DictReader(fh) if r["expected"] == "sat" and r["counterexample"]]
    # the competition's counterexamples; test/counterexamples/ holds a locally generated file
    # that is not in the VNN-COMP format (values written as np.float64(...))
    sat = [r for r in sat if not r["counterexample"].startswith("test/")]
    assert sat
    for row in sat:
        prop = parse_vnnlib(VNNCOMP / row["vnnlib"])
        x, y = parse_counterexample(VNNCOMP / row["counterexample"])
        assert (x.shape, y.shape) == ((prop.n_inputs,), (prop.n_outputs,))
        assert prop.is_counterexample(x, y, tol=1e-4), row["counterexample"]


def test_counterexample_text_with_sat_line_and_negated_values():
    x, y = parse_counterexample("sat\n((X_0 0.5) (X_1 (- 0.25))\n (Y_0 -1e-2))")
    np.testing.assert_array_equal(x, [0.5, -0.25])
    np.testing.assert_array_equal(y, [-0.01])
    with pytest.raises(VnnlibError, match="without gaps"):
        parse_counterexample("((X_1 0.5) (Y_0 1))")
