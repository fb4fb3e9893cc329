"""Ops without rules: the error lists every such node with its op and the user's source line;
a rule registered with ``boundgraph.register_op`` (a user-written ``Elementwise``) makes the
model work, with sound bounds for every method; unregistering restores the error."""
import pytest
import torch
import torch.nn as nn

import boundgraph as bg
from boundgraph.frontends.torch_trace import CONVERTERS, Unsupported
from op_checks import check_sound, line_violation, one_thread, op_kinds  # noqa: F401


class Expm1AndAtan(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.expm1(self.a(x))  # no rule: expm1
        h = torch.atan(h) + torch.relu(h)  # no rule: atan
        return self.b(h)


class ExpNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.expm1(self.a(x)))


class Expm1(bg.ops.Elementwise):
    """A user's rule for ``expm1`` (``exp(x) - 1``: convex, increasing): tangent at the
    midpoint below, chord above; the default interval ``(f(l), f(u))`` is right for an
    increasing function."""

    kind = "expm1"

    def forward(self, x):
        return torch.expm1(x)

    def relax(self, l, u, opts=None):
        m = (l + u) / 2
        em = torch.exp(m)
        k = (torch.exp(u) - torch.exp(l)) / (u - l).clamp(min=1e-12)
        return em, em * (1 - m) - 1, k, torch.expm1(l) - k * l


@pytest.fixture
def exp_rule():
    """Register the user's exp rule for one test and remove it afterwards."""
    bg.register_op("aten.expm1.default", lambda args, node: (Expm1(), [args["self"]]))
    yield
    CONVERTERS.pop("aten.expm1.default", None)


def test_error_lists_every_node_without_a_rule_with_its_source_line():
    with pytest.raises(bg.UnsupportedOpError) as e:
        bg.BoundedModule(Expm1AndAtan(), torch.rand(2, 3))
    err = e.value
    assert [op for _, op, _ in err.nodes] == ["aten.expm1.default", "aten.atan.default"]
    msg = str(err)
    assert "2 operation(s) in Expm1AndAtan" in msg
    assert "test_custom_ops.py" in msg
    assert "h = torch.expm1(self.a(x))" in msg and "h = torch.atan(h) + torch.relu(h)" in msg
    assert "register_op" in msg


def test_registered_elementwise_rule_makes_the_model_work_and_sound(exp_rule):
    torch.manual_seed(0)
    model = ExpNet().eval()
    x = torch.randn(3, 3)
    bm = bg.BoundedModule(model, x)
    assert "expm1" in op_kinds(bm)
    for eps in (1e-6, 0.1, 1.0):
        check_sound(model, x, eps, n=16, bm=bm)


def test_the_user_rule_lines_hold_on_dense_grids():
    l = torch.tensor([-5.0, -1.0, 0.0, 2.0, 1e-3], dtype=torch.float64)
    u = torch.tensor([-4.0, 1.0, 1e-7, 6.0, 1e-3], dtype=torch.float64)
    vl, vu = line_violation(Expm1(), l, u)
    assert (vl <= 1e-12).all() and (vu <= 1e-12 * torch.exp(u)).all()


def test_rules_can_be_registered_by_overload_and_refuse_some_uses():
    def factory(args, node):
        if node.meta["val"].dim() != 2:
            raise Unsupported("expm1 only on (batch, features) tensors here")
        return Expm1(), [args["self"]]

    try:
        bg.register_op(torch.ops.aten.expm1.default)(factory)  # decorator form, op overload
        bm = bg.BoundedModule(ExpNet(), torch.rand(2, 3))
        assert "expm1" in op_kinds(bm)

        class Exp3d(nn.Module):
            def forward(self, x):
                return torch.expm1(x.unsqueeze(1))

        with pytest.raises(bg.UnsupportedOpError, match="expm1 only on"):
            bg.BoundedModule(Exp3d(), torch.rand(2, 3))
    finally:
        CONVERTERS.pop("aten.expm1.default", None)


def test_unregistering_restores_the_error(exp_rule):
    bg.BoundedModule(ExpNet(), torch.rand(2, 3))
    CONVERTERS.pop("aten.expm1.default")
    with pytest.raises(bg.UnsupportedOpError, match="aten.expm1.default"):
        bg.BoundedModule(ExpNet(), torch.rand(2, 3))
