"""Arithmetic: the McCormick planes of a product of two bounded tensors hold on the whole box
(broadcasting included) and every method is sound through products; the product's interval
and the square's are exact ranges; the square's lines hold on dense grids; division by a
constant, negation, subtraction with alpha and reversed subtraction are exact affine maps;
division by the input is a product with its reciprocal (a divisor interval reaching 0 is one
clear error); constant powers have rules."""
import pytest
import torch
import torch.nn as nn

import boundgraph as bg
from boundgraph.ops import Mul, Square
from boundgraph.ops.base import Interval
from op_checks import (assert_exact, check_sound, grid, line_violation, one_thread,  # noqa: F401
                       op_kinds, sample_intervals, traced)


# ------------------------------------------------------------------------ McCormick products
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (3, 1)), ((1, 4), (3, 4))],
                         ids=["same", "b_broadcasts", "a_broadcasts"])
def test_mccormick_planes_hold_on_the_whole_box(shapes):
    g = torch.Generator().manual_seed(0)
    kw = dict(generator=g, dtype=torch.float64)
    sa, sb = shapes
    B, S = 2, 5
    ca, cb = torch.randn(B, *sa, **kw) * 2, torch.randn(B, *sb, **kw) * 2
    ra, rb = torch.rand(B, *sa, **kw) * 2, torch.rand(B, *sb, **kw) * 2
    a, b = Interval(ca - ra, ca + ra), Interval(cb - rb, cb + rb)
    op = Mul()
    op.in_shapes, op.out_shape = (sa, sb), (3, 4)
    A = torch.randn(B, S, 3, 4, **kw)
    per_input, lb, ub = op.backward(A, A, a, b)
    (la_, ua_), (lb_, ub_) = per_input
    assert la_.shape == (B, S, *sa) and lb_.shape == (B, S, *sb)
    N = 400
    pa = a.lower + torch.rand(N, B, *sa, **kw) * (a.upper - a.lower)
    pb = b.lower + torch.rand(N, B, *sb, **kw) * (b.upper - b.lower)
    corner = torch.rand(N, B, *sa, **kw) < 0.5
    pa = torch.cat([pa, torch.where(corner, a.lower, a.upper)])
    pb = torch.cat([pb, torch.where(torch.rand(N, B, *sb, **kw) < 0.5, b.lower, b.upper)])
    val = torch.einsum("bsij,nbij->nbs", A, pa * pb)
    low = torch.einsum("bsij,nbij->nbs", la_, pa) + torch.einsum("bsij,nbij->nbs",
                                                                  lb_.expand(B, S, *sb), pb) + lb
    up = torch.einsum("bsij,nbij->nbs", ua_, pa) + torch.einsum("bsij,nbij->nbs",
                                                                 ub_.expand(B, S, *sb), pb) + ub
    assert (low <= val + 1e-9).all() and (val <= up + 1e-9).all()
    # the interval is the exact range: attained at corners
    iv = op.interval(a, b)
    corners = torch.stack([a.lower * b.lower, a.lower * b.upper, a.upper * b.lower,
                           a.upper * b.upper])
    assert torch.equal(iv.lower, corners.amin(0)) and torch.equal(iv.upper, corners.amax(0))


class Product(nn.Module):
    """Two linear maps of the input multiplied elementwise, then a linear read-out."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.a, self.b = nn.Linear(4, 6), nn.Linear(4, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        if self.kind == "two_paths":
            h = self.a(x) * torch.relu(self.b(x))
        elif self.kind == "flip":
            y = self.a(x)
            h = y * y.flip(1)
        else:  # broadcast: one factor is a per-row scalar
            h = self.a(x) * self.b(x)[:, :1]
        return self.out(h)


@pytest.mark.parametrize("kind", ["two_paths", "flip", "broadcast"])
def test_products_of_bounded_tensors_are_sound_for_every_method(kind):
    torch.manual_seed(0)
    model = Product(kind).eval()
    x = torch.randn(3, 4)
    bm = traced(model, x)
    assert "mul" in op_kinds(bm)
    for eps in (1e-6, 0.2, 20.0):
        check_sound(model, x, eps, n=32, bm=bm)


def test_product_crown_is_no_looser_than_ibp():
    torch.manual_seed(1)
    model = Product("two_paths").eval()
    x = torch.randn(4, 4)
    out = check_sound(model, x, 0.05, n=8)
    w = {m: (ub - lb).mean().item() for m, (lb, ub) in out.items()}
    assert w["crown"] <= w["ibp"] + 1e-6 and w["crown-ibp"] <= w["ibp"] + 1e-6


# ------------------------------------------------------------------------------- square
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_square_lines_hold_on_dense_grids_and_interval_is_the_range(dtype):
    l, u = sample_intervals((0.0,), dtype)
    vl, vu = line_violation(Square(), l, u)
    scale = torch.maximum(l.abs(), u.abs()).double()
    tol = 8 * torch.finfo(dtype).eps * (1 + scale) ** 2
    assert (vl <= tol).all() and (vu <= tol).all()
    iv = Square().interval(Interval(l.double(), u.double()))
    f = grid(l.double(), u.double(), 2001) ** 2
    assert (iv.lower <= f.amin(0)).all() and (iv.upper >= f.amax(0)).all()
    h = (u - l).double() / 2000
    assert (iv.lower >= f.amin(0) - 2 * h * scale - 1e-12).all()
    assert torch.equal(iv.lower[(l < 0) & (u > 0)], torch.zeros(int(((l < 0) & (u > 0)).sum()),
                                                                dtype=torch.float64))


SQUARES = {
    "mul_self": lambda y: y * y,
    "pow_int": lambda y: y ** 2,
    "pow_float": lambda y: torch.pow(y, 2.0),
    "square": torch.square,
}


@pytest.mark.parametrize("name", sorted(SQUARES))
def test_square_spellings_trace_to_square_and_are_sound(name):
    fn = SQUARES[name]

    class Sq(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.out = nn.Linear(4, 5), nn.Linear(5, 2)

        def forward(self, x):
            return self.out(fn(self.a(x)))

    torch.manual_seed(0)
    model = Sq().eval()
    x = torch.randn(3, 4)
    bm = traced(model, x)
    assert "square" in op_kinds(bm) and "mul" not in op_kinds(bm)
    for eps in (1e-6, 0.3, 30.0):
        check_sound(model, x, eps, n=16, bm=bm)


def test_constant_powers_have_rules_and_power_one_is_the_identity():
    class Cube(nn.Module):
        def forward(self, x):
            return x ** 3

    bm = traced(Cube(), torch.rand(2, 3))
    assert op_kinds(bm) == ["pow"]
    check_sound(Cube(), torch.rand(2, 3), 0.2, n=8, bm=bm)

    class One(nn.Module):
        def forward(self, x):
            return x ** 1 + 0

    bm = traced(One(), torch.rand(2, 3))
    assert "square" not in op_kinds(bm) and "pow" not in op_kinds(bm)


# ---------------------------------------------------------------------- affine arithmetic
class Affine(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.lin = nn.Linear(4, 4)
        self.register_buffer("d", torch.tensor([0.5, -2.0, 4.0, 1.5]))

    def forward(self, x):
        h = self.lin(x)
        return {"div_scalar": lambda: h / 3.0,
                "div_buffer": lambda: h / self.d,
                "neg": lambda: -h,
                "sub_alpha": lambda: torch.sub(h, x, alpha=2.5),
                "rsub": lambda: 1.0 - h,
                "add_scalar_and_mul_const": lambda: (h + 2.0) * self.d,
                }[self.kind]()


@pytest.mark.parametrize("kind", ["div_scalar", "div_buffer", "neg", "sub_alpha", "rsub",
                                  "add_scalar_and_mul_const"])
def test_affine_arithmetic_is_exact_for_every_backward_method_and_sound_for_ibp(kind):
    torch.manual_seed(0)
    model = Affine(kind).eval()
    x = torch.randn(3, 4)
    bm = traced(model, x)
    assert_exact(bm, model, x, 0.3)
    check_sound(model, x, 0.3, methods=("ibp",), n=8, bm=bm)


def test_division_by_the_input_is_a_product_with_its_reciprocal_and_sound():
    class Ratio(nn.Module):
        def forward(self, x):
            return x / (x + 2)

    x = torch.rand(2, 3)
    bm = traced(Ratio(), x)
    assert {"reciprocal", "mul"} <= set(op_kinds(bm))
    check_sound(Ratio(), x, 0.3, n=16, bm=bm)
    with pytest.raises(bg.DomainError, match="reciprocal of an interval containing 0"):
        bm.compute_bounds(x, bg.LinfBall(3.0), method="ibp")  # x + 2 may reach 0


class ColumnScaled(nn.Module):
    """A convolutional feature map times a constant that varies along the columns only: a
    pointwise op whose constant must not be cropped like a per-channel one."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.register_buffer("w", torch.linspace(0.5, 2.0, 6))
        self.fc = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x)) * self.w
        return self.fc(torch.relu(h * 2.0 - 0.1).flatten(1))


def test_constants_varying_over_columns_are_sound_for_every_method():
    torch.manual_seed(0)
    model = ColumnScaled().eval()
    check_sound(model, torch.rand(2, 1, 8, 8), 0.05, lower=0.0, upper=1.0)
