"""More affine ops (conv1d, conv_transpose 1-d/2-d, upsample nearest/bilinear): the forward is
torch's function, the transpose is the exact adjoint of the map, ``|W| x`` is the map with
absolute matrix entries, and IBP and the backward rule give exactly the range of the map over a
box (each checked against the explicit matrix of a tiny example, in float64)."""
import pytest
import torch
import torch.nn.functional as F

from boundgraph.ops import affine
from boundgraph.ops.affine_more import MORE_AFFINE_OPS, Conv1d, ConvTranspose, Upsample
from boundgraph.ops.base import Affine, Interval, concretize
from op_checks import one_thread  # noqa: F401

F64 = dict(dtype=torch.float64)

# name: (op kind, attrs, per-sample input shape, weight shape or None)
CONFIGS = {
    "conv1d_k3": ("conv1d", dict(), (2, 7), (3, 2, 3)),
    "conv1d_s2_p1": ("conv1d", dict(stride=2, padding=1), (2, 8), (3, 2, 3)),
    "conv1d_d2_p2": ("conv1d", dict(dilation=2, padding=2), (2, 7), (2, 2, 3)),
    "conv1d_g2_s2_odd": ("conv1d", dict(stride=2, groups=2, padding=1), (4, 9), (4, 2, 3)),
    "conv1d_k5_s3_leftover": ("conv1d", dict(stride=3), (1, 11), (2, 1, 5)),
    "convt1d_k3": ("conv_transpose", dict(), (2, 5), (2, 3, 3)),
    "convt1d_s2_p1_op1": ("conv_transpose", dict(stride=2, padding=1, output_padding=1),
                          (3, 5), (3, 2, 3)),
    "convt1d_g2_d2_s2": ("conv_transpose", dict(groups=2, dilation=2, stride=2),
                         (4, 4), (4, 1, 3)),
    "convt1d_s1_d2_op1_crop": ("conv_transpose", dict(dilation=2, output_padding=1),
                               (2, 5), (2, 2, 3)),
    "convt2d_k3_s2_p1_op1": ("conv_transpose", dict(stride=2, padding=1, output_padding=1),
                             (2, 3, 4), (2, 3, 3, 3)),
    "convt2d_k4_s2_p1": ("conv_transpose", dict(stride=2, padding=1), (3, 3, 3),
                         (3, 2, 4, 4)),
    "convt2d_g2_tuples": ("conv_transpose", dict(stride=(2, 1), padding=(1, 0),
                                                 output_padding=(1, 0), groups=2,
                                                 dilation=(1, 2)), (4, 3, 3), (4, 1, 3, 2)),
    "convt2d_s1_d2_op1_crop": ("conv_transpose", dict(dilation=2, output_padding=1),
                               (2, 3, 3), (2, 1, 2, 3)),
    "nearest2d_x2": ("upsample", dict(size=(6, 8), mode="nearest"), (2, 3, 4), None),
    "nearest2d_odd_size": ("upsample", dict(size=(7, 3), mode="nearest"), (2, 3, 4), None),
    "nearest1d_x2": ("upsample", dict(size=10, mode="nearest"), (2, 5), None),
    "nearest1d_odd_size": ("upsample", dict(size=(8,), mode="nearest"), (3, 5), None),
    "bilinear_align_corners": ("upsample", dict(size=(7, 9), mode="bilinear",
                                                align_corners=True), (2, 3, 4), None),
    "bilinear_no_align_corners": ("upsample", dict(size=(7, 9), mode="bilinear",
                                                   align_corners=False), (2, 3, 4), None),
    "bilinear_x2_no_align_corners": ("upsample", dict(size=(6, 8), mode="bilinear"),
                                     (1, 3, 4), None),
}
NAMES = sorted(CONFIGS)
OPS = {cls.kind: cls for cls in MORE_AFFINE_OPS}


def reference(name, x, w=None, b=None):
    """The map of config ``name`` written with torch's functions directly."""
    kind, a, _, _ = CONFIGS[name]
    if kind == "conv1d":
        return F.conv1d(x, w, b, a.get("stride", 1), a.get("padding", 0), a.get("dilation", 1),
                        a.get("groups", 1))
    if kind == "conv_transpose":
        fn = F.conv_transpose1d if x.dim() == 3 else F.conv_transpose2d
        return fn(x, w, b, a.get("stride", 1), a.get("padding", 0), a.get("output_padding", 0),
                  a.get("groups", 1), a.get("dilation", 1))
    return F.interpolate(x, size=a["size"], mode=a["mode"], align_corners=a.get("align_corners"))


def make(name, bias=True, seed=0):
    """The op of config ``name`` with its shapes set as the graph would, and its constants
    (float64 weight and bias, ``[]`` for upsample)."""
    kind, attrs, in_shape, w_shape = CONFIGS[name]
    g = torch.Generator().manual_seed(seed)
    op = OPS[kind](**attrs)
    consts = []
    if w_shape is not None:
        w = torch.randn(w_shape, generator=g, **F64)
        out_channels = w_shape[0] if kind == "conv1d" else w_shape[1] * attrs.get("groups", 1)
        consts = [w, torch.randn(out_channels, generator=g, **F64) if bias else None]
    op.in_shapes = (tuple(in_shape),)
    op.out_shape = tuple(reference(name, torch.zeros(1, *in_shape, **F64), *consts).shape[1:])
    return op, consts


def numel(shape):
    return int(torch.Size(shape).numel())


def matrix(op, consts):
    """The explicit matrix ``W`` (outputs x inputs) of the op's linear part, from its ``apply``
    on unit vectors, and the offset as a flat vector (the forward of zero)."""
    n, m = numel(op.in_shapes[0]), numel(op.out_shape)
    basis = torch.eye(n, **F64).reshape(n, *op.in_shapes[0])
    W = op.apply(basis, *consts).reshape(n, m).T
    off = op.forward(torch.zeros(1, *op.in_shapes[0], **F64), *consts).reshape(m)
    return W, off


def test_every_op_is_an_affine_op_with_its_kind():
    assert [c.kind for c in MORE_AFFINE_OPS] == ["conv1d", "conv_transpose", "upsample"]
    assert all(issubclass(c, Affine) and c.__doc__ for c in MORE_AFFINE_OPS)
    assert (Conv1d, ConvTranspose, Upsample) == MORE_AFFINE_OPS


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("name", NAMES)
def test_forward_equals_the_torch_function(name, bias):
    op, consts = make(name, bias)
    x = torch.randn(3, *op.in_shapes[0], **F64)
    want = reference(name, x, *consts)
    got = op.forward(x, *consts)
    assert tuple(got.shape[1:]) == op.out_shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # the linear part plus the (per-channel) offset is the forward too
    off = op.offset(*consts)
    lin = op.apply(x, *consts)
    torch.testing.assert_close(lin if off is None else lin + off, want, rtol=1e-12, atol=1e-12)


# conv1d borrows conv2d's transposed convolution, whose fast CPU paths (matrix product and
# fold; channels-last) only start at 64 rows: "fast_paths" lowers that to 1 row
ADJOINT_CASES = [pytest.param(n, fast, id=f"{n}-{'fast_paths' if fast else 'torch_kernels'}")
                 for n in NAMES for fast in ((False, True) if n.startswith("conv1d") else (False,))]


@pytest.mark.parametrize("coef_batch", [3, 1], ids=["per_example", "shared"])
@pytest.mark.parametrize("name,fast_rows", ADJOINT_CASES)
def test_transpose_is_the_exact_adjoint_of_the_map(monkeypatch, name, fast_rows, coef_batch):
    if fast_rows:
        monkeypatch.setattr(affine, "_FAST_MIN_ROWS", 1)
    op, consts = make(name)
    B, S = 3, 5
    x = torch.randn(B, *op.in_shapes[0], **F64)
    A = torch.randn(coef_batch, S, *op.out_shape, **F64)
    At = op.transpose(A, *consts)
    assert tuple(At.shape) == (coef_batch, S, *op.in_shapes[0])
    Wx = op.apply(x, *consts)
    lhs = (A * Wx.unsqueeze(1)).flatten(2).sum(-1)   # (B, S): sum(A[s] * W x)
    rhs = (At * x.unsqueeze(1)).flatten(2).sum(-1)   # (B, S): sum(A[s] W * x)
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_transpose_of_the_unit_rows_is_the_explicit_matrix(name):
    op, consts = make(name)
    W, _ = matrix(op, consts)
    m = W.shape[0]
    rows = op.transpose(torch.eye(m, **F64).reshape(1, m, *op.out_shape), *consts)
    torch.testing.assert_close(rows.reshape(m, -1), W, rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", NAMES)
def test_absolute_apply_is_the_map_with_absolute_matrix_entries(name):
    op, consts = make(name)
    W, _ = matrix(op, consts)
    if consts:
        assert (W < 0).any()  # the check below would be empty otherwise
    else:
        assert (W >= 0).all()  # upsampling weights are non-negative: |W| x = W x
    x = torch.randn(4, *op.in_shapes[0], **F64)
    got = op.apply(x, *consts, absolute=True)
    want = (x.flatten(1) @ W.abs().T).reshape(4, *op.out_shape)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def _exact_range(op, consts, c, r):
    W, off = matrix(op, consts)
    mid = c.flatten(1) @ W.T + off
    rad = r.flatten(1) @ W.abs().T
    return mid - rad, mid + rad


@pytest.mark.parametrize("form", ["center_radius", "lower_upper"])
@pytest.mark.parametrize("name", NAMES)
def test_ibp_gives_the_exact_range_over_a_box(name, form):
    # lower_upper reaches the halving path of maps with fewer outputs than inputs
    op, consts = make(name)
    c = torch.randn(2, *op.in_shapes[0], **F64)
    r = torch.rand(2, *op.in_shapes[0], **F64)
    box = Interval.from_center(c, r) if form == "center_radius" else Interval(c - r, c + r)
    want_lo, want_hi = _exact_range(op, consts, c, r)
    iv = op.interval(box, *consts)
    torch.testing.assert_close(iv.lower.flatten(1), want_lo, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(iv.upper.flatten(1), want_hi, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sides", ["one_tensor", "two_tensors", "lower_only", "upper_only"])
@pytest.mark.parametrize("name", NAMES)
def test_backward_with_concretisation_gives_the_exact_range_over_a_box(name, sides):
    op, consts = make(name)
    c = torch.randn(2, *op.in_shapes[0], **F64)
    r = torch.rand(2, *op.in_shapes[0], **F64)
    box = Interval(c - r, c + r)
    want_lo, want_hi = _exact_range(op, consts, c, r)
    m = numel(op.out_shape)
    A = torch.eye(m, **F64).reshape(1, m, *op.out_shape)  # one row per output element
    lA, uA = {"one_tensor": (A, A), "two_tensors": (A, A.clone()),
              "lower_only": (A, None), "upper_only": (None, A)}[sides]
    per_input, lbias, ubias = op.backward(lA, uA, box, *consts)
    assert len(per_input) == 1 + len(consts) and all(p is None for p in per_input[1:])
    nl, nu = per_input[0]
    lo, hi = concretize(nl, nu, box)
    if lA is not None:
        torch.testing.assert_close(lo + lbias, want_lo, rtol=1e-12, atol=1e-12)
    else:
        assert nl is None and lo is None
    if uA is not None:
        torch.testing.assert_close(hi + ubias, want_hi, rtol=1e-12, atol=1e-12)
    else:
        assert nu is None and hi is None


@pytest.mark.parametrize("name", NAMES)
def test_transpose_runs_without_autograd_and_is_differentiable(name):
    op, consts = make(name)
    A = torch.randn(2, 3, *op.out_shape, **F64)
    with torch.no_grad():
        plain = op.transpose(A, *consts)
    assert not plain.requires_grad
    with torch.enable_grad():
        torch.testing.assert_close(op.transpose(A, *consts), plain, rtol=0, atol=0)
        # gradients for the coefficients and the weight (CROWN-IBP training needs both)
        leaves = [A.clone().requires_grad_()] + [c.clone().requires_grad_() for c in consts[:1]]
        assert torch.autograd.gradcheck(
            lambda a, *w: op.transpose(a, *w, *consts[1:]), tuple(leaves))


def test_constructors_refuse_what_the_rules_do_not_cover():
    with pytest.raises(ValueError):
        Upsample((4, 4), mode="bicubic")
    with pytest.raises(ValueError):
        Upsample(8, mode="bilinear")
    with pytest.raises(ValueError):
        Upsample((4, 4), mode="nearest", align_corners=True)
    with pytest.raises(ValueError):
        Conv1d(padding="same")
    op = ConvTranspose(stride=2)
    with pytest.raises(ValueError):
        op.apply(torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 1, 1, 1, 1))


def test_attributes_are_normalised_like_torch():
    assert Conv1d(stride=(2,), padding=[1]).attrs == dict(stride=2, padding=1, dilation=1,
                                                          groups=1)
    assert Upsample(10).attrs["size"] == (10,)
    assert Upsample([6, 8], mode="bilinear").attrs["align_corners"] is False
