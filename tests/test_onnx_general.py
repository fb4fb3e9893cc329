"""ONNX round trips of the general architectures: LayerNorm, attention, LSTM/GRU, 1-d and
transposed convolutions, upsampling, element-wise functions, maxima/minima and softmax heads.

Each model is traced from torch, written with ``bg.export_onnx`` (from the bound graph, no
fallback), run with onnxruntime against the torch model, read back with ``bg.load_onnx``
(forward equal to onnxruntime) and bounded with IBP and CROWN (sampled and attacked points stay
inside). Files written by hand with ``onnx.helper`` or by ``torch.onnx.export`` cover the ONNX
ops the exporter does not write (LayerNormalization, LSTM, GRU, other Resize modes, ...)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import boundgraph as bg
from boundgraph.errors import UnsupportedOpError
from oracle import assert_sound

RNG = np.random.default_rng(0)


def _f(*shape, scale=0.5):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def run_ort(path, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = x.numpy() if torch.is_tensor(x) else x
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def assert_close(a, b, rtol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(1.0, float(np.abs(b).max()))
    assert np.abs(a - b).max() <= rtol * scale, np.abs(a - b).max()


def assert_bounds_sound(bm, x, eps, methods=("ibp", "crown"), lo=None, hi=None):
    """IBP and CROWN bounds over the l-inf ball (clipped to ``[lo, hi]``) contain the outputs
    of sampled and attacked points."""
    pert = bg.LinfBall(eps) if lo is None else bg.LinfBall(eps, lo, hi)
    xlo, xhi = x - eps, x + eps
    if lo is not None:
        xlo, xhi = xlo.clamp(min=lo), xhi.clamp(max=hi)
    for method in methods:
        with torch.no_grad():
            lb, ub = bm.compute_bounds(x, pert, method=method)
        assert torch.isfinite(lb).all() and torch.isfinite(ub).all()
        assert (lb <= ub + 1e-6).all()
        assert_sound(lambda z: bm(z).reshape(z.shape[0], -1), xlo, xhi,
                     lb.reshape(x.shape[0], -1), ub.reshape(x.shape[0], -1), n=32)


def build(nodes, in_shape, inits=None, opset=13, out="y"):
    inits = inits or {}
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8)
    return model


def save(model, tmp_path, name="m.onnx"):
    path = tmp_path / name
    onnx.save_model(model, str(path))
    return path


def assert_import_matches_ort(path, sample_shape, n=4, scale=1.0, positive=False):
    """Import and compare with onnxruntime example by example (the file's batch is 1)."""
    bm = bg.load_onnx(path)
    assert bm.graph.input_shape == tuple(sample_shape)
    xs = RNG.standard_normal((n, *sample_shape)) * scale
    xs = (np.abs(xs) + 0.5 if positive else xs).astype(np.float32)
    with torch.no_grad():
        got = bm(torch.from_numpy(xs)).numpy().reshape(n, -1)
    for i in range(n):
        ref = run_ort(path, xs[i:i + 1]).reshape(-1)
        np.testing.assert_allclose(got[i], ref, rtol=1e-5, atol=1e-5)
    return bm


def kinds(bm):
    return [n.op.kind for n in bm.graph.op_nodes()]


# ---------------------------------------------------------------------------------- models
class LayerNormMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.ln, self.fc2 = nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.ln(self.fc1(x))))


class SelfAttention(nn.Module):
    def __init__(self, d=4, n=3):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.out = nn.Linear(n * d, 2)
        self.d = d

    def forward(self, h):
        a = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / math.sqrt(self.d), dim=-1)
        return self.out((a @ self.v(h)).flatten(1))


class MultiheadAttentionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.att = nn.MultiheadAttention(4, 2, batch_first=True)
        self.out = nn.Linear(3 * 4, 2)

    def forward(self, x):
        y, _ = self.att(x, x, x, need_weights=False)
        return self.out(y.flatten(1))


class RNNClassifier(nn.Module):
    def __init__(self, cell, **kw):
        super().__init__()
        self.rnn = cell(3, 4, batch_first=True, **kw)
        self.fc = nn.Linear(4 * (2 if kw.get("bidirectional") else 1), 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(2, 4, 3, stride=2, padding=1)
        self.c2 = nn.Conv1d(4, 4, 2, groups=2, dilation=2)
        self.fc = nn.Linear(4 * 3, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(x)))).flatten(1))


class ConvTransposeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1)
        self.up2 = nn.ConvTranspose2d(3, 2, 2, stride=1, groups=1, dilation=2)

    def forward(self, x):
        return self.up2(torch.relu(self.up(x))).flatten(1)


class UpsampleNet(nn.Module):
    def __init__(self, mode, align_corners=None, scale=2, size=None):
        super().__init__()
        self.up = nn.Upsample(size=size, scale_factor=None if size else scale, mode=mode,
                              align_corners=align_corners)
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.conv(self.up(x)).flatten(1)


class Elementwise(nn.Module):
    """Functions with restricted domains on ``p = x + 1`` (inputs in [0, 1], so p in [1, 2])."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h, p = self.fc(x), x + 1.0
        return torch.cat([torch.exp(h), torch.log(p), torch.reciprocal(p), torch.sqrt(p),
                          torch.rsqrt(p), torch.sin(h), torch.cos(h), torch.erf(h), p ** 1.5,
                          p ** -0.5], 1)


class MaxMin(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        return torch.cat([torch.maximum(a, b), torch.minimum(a, b),
                          torch.amax(a.reshape(-1, 2, 2), dim=2),
                          torch.amin(b.reshape(-1, 2, 2), dim=-1)], 1)


class SoftmaxHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        h = self.fc(x)
        return torch.cat([torch.softmax(h, -1), torch.log_softmax(h, 1)], 1)


#: name -> (model factory, example input shape, ONNX ops the export must hold, op kinds the
#: import must hold, eps)
MODELS = {
    "layernorm_mlp": (LayerNormMLP, (2, 6), {"ReduceMean", "Sub", "Sqrt", "Reciprocal"},
                      {"center", "square", "mean", "rsqrt"}, 0.02),
    "self_attention": (SelfAttention, (2, 3, 4), {"MatMul", "Softmax", "Transpose"},
                       {"matmul", "softmax", "permute"}, 0.02),
    "multihead_attention": (MultiheadAttentionNet, (2, 3, 4), {"MatMul", "Softmax"},
                            {"matmul", "softmax"}, 0.01),
    "lstm": (lambda: RNNClassifier(nn.LSTM), (2, 3, 3), {"Sigmoid", "Tanh", "Mul", "Concat"},
             {"sigmoid", "tanh", "mul", "cat"}, 0.05),
    "gru": (lambda: RNNClassifier(nn.GRU), (2, 3, 3), {"Sigmoid", "Tanh", "Mul", "Sub"},
            {"sigmoid", "tanh", "mul", "sub"}, 0.05),
    "conv1d": (Conv1dNet, (2, 2, 9), {"Conv"}, {"conv1d"}, 0.05),
    "conv_transpose2d": (ConvTransposeNet, (2, 2, 3, 3), {"ConvTranspose"},
                         {"conv_transpose"}, 0.05),
    "upsample_nearest": (lambda: UpsampleNet("nearest"), (2, 2, 3, 3), {"Resize"},
                         {"upsample"}, 0.05),
    "upsample_bilinear": (lambda: UpsampleNet("bilinear", False), (2, 2, 3, 3), {"Resize"},
                          {"upsample"}, 0.05),
    "upsample_bilinear_align_corners": (lambda: UpsampleNet("bilinear", True, size=(5, 7)),
                                        (2, 2, 3, 4), {"Resize"}, {"upsample"}, 0.05),
    "elementwise": (Elementwise, (2, 4), {"Exp", "Log", "Reciprocal", "Sqrt", "Sin", "Cos",
                                          "Erf", "Pow"},
                    {"exp", "log", "reciprocal", "sqrt", "rsqrt", "sin", "cos", "erf", "pow"},
                    0.05),
    "max_min_amax": (MaxMin, (2, 4), {"Max", "Min", "ReduceMax", "ReduceMin"},
                     {"maximum", "minimum", "amax", "amin"}, 0.05),
    "softmax_heads": (SoftmaxHeads, (2, 4), {"Softmax", "LogSoftmax"},
                      {"softmax", "log_softmax"}, 0.05),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_traced_model_round_trips_through_onnx_with_equal_outputs_and_sound_bounds(tmp_path,
                                                                                  name):
    make, shape, onnx_ops, op_kinds, eps = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    x = torch.rand(*shape)
    path = bg.export_onnx(model, x, tmp_path / f"{name}.onnx")
    written = onnx.load(path)
    assert written.producer_name == "boundgraph"  # from the bound graph, no fallback
    assert onnx_ops <= {n.op_type for n in written.graph.node}
    xb = torch.rand(3, *shape[1:])  # another batch size than the example's
    with torch.no_grad():
        expected = model(xb).numpy()
    assert_close(run_ort(path, xb), expected)
    imported = bg.load_onnx(path)
    assert op_kinds <= set(kinds(imported))
    with torch.no_grad():
        assert_close(imported(xb).numpy(), run_ort(path, xb))
    assert_bounds_sound(imported, xb, eps, lo=0.0, hi=1.0)


def test_layernorm_round_trip_keeps_the_traced_ops_and_bounds(tmp_path):
    """Sub(x, ReduceMean(x)) comes back as one center op, Reciprocal(Sqrt) as rsqrt and
    Mul(x, x) as square: the imported graph is the traced one, bounds included."""
    torch.manual_seed(0)
    model = LayerNormMLP().eval()
    x = torch.rand(2, 6)
    traced = bg.BoundedModule(model, x)
    imported = bg.load_onnx(bg.export_onnx(traced, x, tmp_path / "ln.onnx"))
    assert kinds(imported) == kinds(traced)
    pert = bg.LinfBall(0.02)
    for method in ("ibp", "crown"):
        with torch.no_grad():
            lt, ut = traced.compute_bounds(x, pert, method=method)
            li, ui = imported.compute_bounds(x, pert, method=method)
        assert_close(li.numpy(), lt.numpy(), rtol=1e-4)
        assert_close(ui.numpy(), ut.numpy(), rtol=1e-4)


def test_upsample_nearest_at_a_size_where_resize_rounds_differently_exports_as_gather(tmp_path):
    # 14 -> 2 rows: torch takes source rows 0 and 7, Resize (asymmetric, floor) computes
    # 1 / (2 / 14) in float32 = 6.9999... -> row 6; the exporter writes torch's indices
    model = UpsampleNet("nearest", size=(2, 7)).eval()
    x = torch.rand(2, 2, 14, 6)
    path = bg.export_onnx(model, x, tmp_path / "up.onnx")
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert "Gather" in ops and "Resize" not in ops
    with torch.no_grad():
        assert_close(run_ort(path, x), model(x).numpy())
    imported = bg.load_onnx(path)
    with torch.no_grad():
        assert_close(imported(x).numpy(), model(x).numpy())


@pytest.mark.parametrize("opset", [13, 17])
def test_exported_attention_loads_at_both_ends_of_the_opset_range(tmp_path, opset):
    torch.manual_seed(0)
    model = SelfAttention().eval()
    x = torch.rand(2, 3, 4)
    path = bg.export_onnx(model, x, tmp_path / "a.onnx", opset=opset)
    assert onnx.load(path).opset_import[0].version == opset
    with torch.no_grad():
        assert_close(bg.load_onnx(path)(x).numpy(), model(x).numpy())


# ---------------------------------------------------------------------------------- import
@pytest.mark.parametrize("axis,with_bias", [(-1, True), (-2, True), (2, False)])
def test_layer_normalization_node_imports_and_matches_onnxruntime(tmp_path, axis, with_bias):
    normalized = (3, 4)[axis:] if axis < 0 else (3, 4)[axis - 1:]
    inits = {"scale": _f(*normalized) + 1.0}
    ins = ["x", "scale"]
    if with_bias:
        inits["bias"] = _f(*normalized)
        ins.append("bias")
    nodes = [helper.make_node("LayerNormalization", ins, ["y"], axis=axis, epsilon=1e-3)]
    path = save(build(nodes, ["N", 3, 4], inits, opset=17), tmp_path)
    bm = assert_import_matches_ort(path, (3, 4))
    want = ["center", "square", "mean", "add", "rsqrt", "mul", "clamp", "mul"] + \
        (["add"] if with_bias else [])
    assert kinds(bm) == want
    assert_bounds_sound(bm, torch.randn(2, 3, 4), 0.05)


@pytest.mark.parametrize("opset,axis", [(13, 1), (13, -1), (11, 1), (11, 2)])
def test_softmax_and_log_softmax_follow_the_axis_rule_of_the_opset(tmp_path, opset, axis):
    # before opset 13 the input is flattened to 2-d at axis: axis 1 of (N, 3, 4) spans 12
    nodes = [helper.make_node("Softmax", ["x"], ["s"], axis=axis),
             helper.make_node("LogSoftmax", ["x"], ["l"], axis=axis),
             helper.make_node("Add", ["s", "l"], ["y"])]
    bm = assert_import_matches_ort(save(build(nodes, ["N", 3, 4], opset=opset), tmp_path),
                                   (3, 4), scale=2.0)
    assert {"softmax", "log_softmax"} <= set(kinds(bm))


def test_unary_functions_pow_exponents_and_division_by_a_tensor(tmp_path):
    nodes = [helper.make_node("Exp", ["x"], ["e"]),
             helper.make_node("Log", ["x"], ["l"]),
             helper.make_node("Sqrt", ["x"], ["s"]),
             helper.make_node("Reciprocal", ["s"], ["rs"]),
             helper.make_node("Pow", ["x", "half"], ["p1"]),
             helper.make_node("Pow", ["x", "three"], ["p2"]),
             helper.make_node("Pow", ["x", "minus_one"], ["p3"]),
             helper.make_node("Sin", ["x"], ["si"]),
             helper.make_node("Cos", ["x"], ["co"]),
             helper.make_node("Erf", ["x"], ["er"]),
             helper.make_node("Div", ["e", "x"], ["d"]),
             helper.make_node("Concat", ["e", "l", "rs", "p1", "p2", "p3", "si", "co", "er", "d"],
                              ["y"], axis=1)]
    inits = {"half": np.float32(0.5), "three": np.float32(3.0), "minus_one": np.float32(-1.0)}
    bm = assert_import_matches_ort(save(build(nodes, ["N", 3], inits), tmp_path), (3,),
                                   positive=True)
    assert {"exp", "log", "rsqrt", "pow", "sin", "cos", "erf", "reciprocal", "mul"} <= \
        set(kinds(bm))
    assert_bounds_sound(bm, torch.rand(2, 3) + 1.0, 0.1)


def test_max_min_with_constants_and_reduce_max_min(tmp_path):
    nodes = [helper.make_node("Max", ["x", "c", "r"], ["m"]),
             helper.make_node("Min", ["m", "k"], ["mn"]),
             helper.make_node("ReduceMax", ["mn"], ["rm"], axes=[2], keepdims=0),
             helper.make_node("ReduceMin", ["x"], ["ri"], axes=[1], keepdims=1),
             helper.make_node("Flatten", ["ri"], ["rif"]),
             helper.make_node("Concat", ["rm", "rif"], ["y"], axis=1),
             helper.make_node("Relu", ["x"], ["r"])]
    inits = {"c": np.float32(-0.2), "k": _f(4)}
    nodes = [nodes[-1]] + nodes[:-1]
    bm = assert_import_matches_ort(save(build(nodes, ["N", 3, 4], inits), tmp_path), (3, 4))
    assert {"maximum", "minimum", "amax", "amin"} <= set(kinds(bm))
    assert_bounds_sound(bm, torch.randn(2, 3, 4), 0.1)


@pytest.mark.parametrize("a_shape,b_perm", [((2, 3, 4), [0, 1, 3, 2]), ((3, 4), [0, 2, 1])])
def test_matmul_of_two_input_dependent_tensors(tmp_path, a_shape, b_perm):
    # x @ relu(x)^T over the last two axes (with a leading head axis, or a plain matrix)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Transpose", ["r"], ["rt"], perm=b_perm),
             helper.make_node("MatMul", ["x", "rt"], ["y"])]
    bm = assert_import_matches_ort(save(build(nodes, ["N", *a_shape]), tmp_path), a_shape)
    assert "matmul" in kinds(bm)
    assert_bounds_sound(bm, torch.randn(2, *a_shape), 0.05)


@pytest.mark.parametrize("attrs,in_shape,w_shape", [
    (dict(strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 1]), (2, 3, 4), (2, 3, 3, 3)),
    (dict(strides=[2, 1], output_shape=[7, 5]), (2, 3, 4), (2, 3, 3, 2)),
    (dict(strides=[2, 2], auto_pad="SAME_UPPER"), (2, 3, 3), (2, 2, 3, 3)),
    (dict(strides=[3], pads=[1, 1], dilations=[2], group=2), (4, 5), (4, 1, 2)),
])
def test_conv_transpose_pads_output_shape_and_groups_match_onnxruntime(tmp_path, attrs,
                                                                        in_shape, w_shape):
    inits = {"W": _f(*w_shape), "B": _f(w_shape[1] * attrs.get("group", 1))}
    nodes = [helper.make_node("ConvTranspose", ["x", "W", "B"], ["y"], **attrs)]
    bm = assert_import_matches_ort(save(build(nodes, ["N", *in_shape], inits), tmp_path),
                                   in_shape)
    assert "conv_transpose" in kinds(bm)
    assert_bounds_sound(bm, torch.randn(2, *in_shape), 0.05, methods=("crown",))


def _torch_onnx(model, x, path, opset=13):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    return path


@pytest.mark.parametrize("opset", [13, 17])
def test_layernorm_as_torch_onnx_writes_it_imports_as_the_traced_ops(tmp_path, opset):
    # opset 13: ReduceMean, Sub, Pow, Sqrt, Div; opset 17: one LayerNormalization node
    torch.manual_seed(0)
    model = LayerNormMLP().eval()
    x = torch.rand(2, 6)
    path = _torch_onnx(model, x, tmp_path / "ln.onnx", opset=opset)
    bm = assert_import_matches_ort(path, (6,))
    traced = kinds(bg.BoundedModule(model, x))
    if opset == 17:
        assert kinds(bm) == traced
    else:  # the same pieces, without the traced range clamp
        assert kinds(bm) == [k for k in traced if k != "clamp"]
    with torch.no_grad():
        assert_close(bm(x).numpy(), model(x).numpy())


@pytest.mark.parametrize("mode,align,scale,size", [
    ("nearest", None, 2, None), ("nearest", None, None, (5, 7)),
    ("bilinear", False, 2, None), ("bilinear", True, None, (5, 7))])
def test_resize_as_torch_onnx_writes_it_imports_as_one_upsample_op(tmp_path, mode, align, scale,
                                                                   size):
    model = UpsampleNet(mode, align, scale, size).eval()
    x = torch.rand(2, 2, 3, 4)
    path = _torch_onnx(model, x, tmp_path / "up.onnx")
    bm = assert_import_matches_ort(path, (2, 3, 4))
    assert kinds(bm)[0] == "upsample"
    with torch.no_grad():
        assert_close(bm(x).numpy(), model(x).numpy())


@pytest.mark.parametrize("attrs,target,ops", [
    (dict(mode="nearest", coordinate_transformation_mode="half_pixel",
          nearest_mode="round_prefer_ceil"), ("sizes", [1, 2, 7, 5]), ["index_select"] * 2),
    (dict(mode="nearest", coordinate_transformation_mode="align_corners"),
     ("scales", [1, 1, 0.5, 1.5]), ["index_select"] * 2),
    (dict(mode="linear", coordinate_transformation_mode="asymmetric"),
     ("scales", [1, 1, 2.0, 1.5]), ["permute", "linear", "permute", "linear"]),
    (dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
     ("sizes", [1, 2, 3, 9]), ["upsample"]),  # torch's bilinear, align_corners=False
])
def test_resize_modes_import_as_upsample_or_per_axis_maps(tmp_path, attrs, target, ops):
    which, v = target
    ins = ["x", "", "scales" if which == "scales" else "", "sizes" if which == "sizes" else ""]
    while not ins[-1]:
        ins.pop()
    arr = np.asarray(v, np.float32 if which == "scales" else np.int64)
    nodes = [helper.make_node("Resize", ins, ["y"], **attrs)]
    bm = assert_import_matches_ort(save(build(nodes, ["N", 2, 4, 4], {which: arr}), tmp_path),
                                   (2, 4, 4))
    assert kinds(bm) == ops
    assert_bounds_sound(bm, torch.randn(2, 2, 4, 4), 0.05, methods=("crown",))


@pytest.mark.parametrize("opset,op,mode,scales,ops", [
    (9, "Upsample", "nearest", [1, 1, 2, 3], ["upsample"]),
    (9, "Upsample", "linear", [1, 1, 2, 1.5], ["permute", "linear", "permute", "linear"]),
    (10, "Resize", "nearest", [1, 1, 0.5, 2], ["upsample"]),
])
def test_upsample_and_resize_10_with_asymmetric_coordinates_import(tmp_path, opset, op, mode,
                                                                   scales, ops):
    nodes = [helper.make_node(op, ["x", "s"], ["y"], mode=mode)]
    inits = {"s": np.asarray(scales, np.float32)}
    bm = assert_import_matches_ort(save(build(nodes, ["N", 2, 4, 4], inits, opset=opset),
                                        tmp_path), (2, 4, 4))
    assert kinds(bm) == ops


@pytest.mark.parametrize("cell,kw", [(nn.LSTM, {}), (nn.GRU, {}),
                                     (nn.LSTM, dict(bidirectional=True)),
                                     (nn.GRU, dict(num_layers=2))])
def test_lstm_and_gru_from_torch_onnx_unroll_into_the_traced_ops(tmp_path, cell, kw):
    torch.manual_seed(0)
    model = RNNClassifier(cell, **kw).eval()
    x = torch.rand(2, 4, 3)
    path = _torch_onnx(model, x, tmp_path / "rnn.onnx", opset=14)
    assert cell.__name__ in {n.op_type for n in onnx.load(str(path)).graph.node}
    bm = assert_import_matches_ort(path, (4, 3))
    with torch.no_grad():
        assert_close(bm(x).numpy(), model(x).numpy())
    assert {"linear", "sigmoid", "tanh", "mul", "stack"} <= set(kinds(bm))
    if not kw:
        assert_bounds_sound(bm, x, 0.05, lo=0.0, hi=1.0)


def _rnn_node(op, layout, D, S=4, I=3, H=5, extra=(), **attrs):
    G = 4 if op == "LSTM" else 3
    inits = {"W": _f(D, G * H, I), "R": _f(D, G * H, H), "B": _f(D, 2 * G * H)}
    state = (D, 1, H) if layout == 0 else (1, D, H)
    ins = ["xs", "W", "R", "B", ""]
    for name in ("h0", "c0") if op == "LSTM" else ("h0",):
        ins.append(name if name in extra else "")
        if name in extra:
            inits[name] = _f(*state)
    if op == "LSTM" and "P" in extra:
        ins.append("P")
        inits["P"] = _f(D, 3 * H)
    while not ins[-1]:
        ins.pop()
    nodes = [helper.make_node("Transpose", ["x"], ["xs"], perm=[1, 0, 2]) if layout == 0 else
             helper.make_node("Identity", ["x"], ["xs"]),
             helper.make_node(op, ins, ["Y", "Yh"], hidden_size=H, layout=layout, **attrs),
             helper.make_node("Flatten", ["Y"], ["fy"], axis=1 if layout else 4),
             helper.make_node("Flatten", ["Yh"], ["fh"], axis=1 if layout else 3),
             helper.make_node("Concat", ["fy", "fh"], ["y"], axis=1 if layout else 0)]
    return build(nodes, [1, S, I], inits, opset=14)


@pytest.mark.parametrize("op,extra,attrs", [
    ("LSTM", ("h0", "c0", "P"), dict(direction="reverse")),
    ("GRU", ("h0",), dict(linear_before_reset=0)),
    ("GRU", ("h0",), dict(direction="bidirectional", activations=["Relu", "Tanh"] * 2)),
])
def test_lstm_and_gru_nodes_with_states_peepholes_and_directions_match_onnxruntime(
        tmp_path, op, extra, attrs):
    D = 2 if attrs.get("direction") == "bidirectional" else 1
    path = save(_rnn_node(op, 0, D, extra=extra, **attrs), tmp_path)
    assert_import_matches_ort(path, (4, 3))


def test_batch_major_lstm_matches_the_onnx_reference_implementation(tmp_path):
    # onnxruntime refuses layout=1, so this one is checked against onnx.reference
    from onnx.reference import ReferenceEvaluator

    model = _rnn_node("LSTM", 1, 1, extra=("h0", "c0", "P"))
    bm = bg.load_onnx(save(model, tmp_path), check=False)
    ref = ReferenceEvaluator(model)
    xs = RNG.random((3, 4, 3)).astype(np.float32)
    with torch.no_grad():
        got = bm(torch.from_numpy(xs)).numpy().reshape(3, -1)
    want = np.stack([ref.run(None, {"x": xs[i:i + 1]})[0].reshape(-1) for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_unsupported_uses_are_listed_with_their_reason(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Pow", ["x", "r"], ["p"], name="pow_by_tensor"),
             helper.make_node("Resize", ["x", "", "sc"], ["z"], name="cubic", mode="cubic"),
             helper.make_node("Flatten", ["z"], ["zf"]),
             helper.make_node("Flatten", ["p"], ["pf"]),
             helper.make_node("Concat", ["zf", "pf"], ["y"], axis=1)]
    inits = {"sc": np.asarray([1, 1, 2, 2], np.float32)}
    path = save(build(nodes, ["N", 1, 2, 2], inits), tmp_path, "bad.onnx")
    with pytest.raises(UnsupportedOpError) as info:
        bg.load_onnx(path)
    msg = str(info.value)
    assert "pow_by_tensor" in msg and "input-dependent exponent" in msg
    assert "cubic" in msg and "mode 'cubic'" in msg
    lstm = _rnn_node("LSTM", 0, 1, clip=1.0)
    with pytest.raises(UnsupportedOpError, match="LSTM with clip"):
        bg.load_onnx(save(lstm, tmp_path, "clip.onnx"))
