"""ONNX import: graphs built here with onnx.helper, one per supported op (and the usual shape
arithmetic around them), must reproduce onnxruntime; bad files and unsupported ops give one
readable error."""
from __future__ import annotations

import gzip

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import boundgraph as bg
from boundgraph.errors import BoundGraphError, InputError, UnsupportedOpError
from boundgraph.frontends.onnx_import import check_against_onnxruntime, load_onnx

RNG = np.random.default_rng(0)


def _f(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def build(nodes, in_shape, out_name="y", inits=None, opset=13, in_name="x", elem=TensorProto.FLOAT,
          ir_version=None):
    """A one-input one-output model; ``inits`` maps names to arrays."""
    inits = inits or {}
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(in_name, elem, in_shape)],
        [helper.make_tensor_value_info(out_name, elem, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version or min(model.ir_version, 8)
    return model


def save(model, tmp_path, name="m.onnx"):
    path = tmp_path / name
    onnx.save_model(model, str(path))
    return path


def run_ort(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def assert_matches_ort(model, tmp_path, sample_shape, batch_dim=True, n=3, scale=1.0):
    """Import, then compare the bound graph with onnxruntime example by example."""
    path = save(model, tmp_path)
    bm = load_onnx(path)
    assert bm.graph.input_shape == tuple(sample_shape)
    xs = (RNG.standard_normal((n, *sample_shape)) * scale).astype(np.float32)
    with torch.no_grad():
        got = bm(torch.from_numpy(xs)).numpy()
    for i in range(n):
        xi = xs[i:i + 1] if batch_dim else xs[i]
        ref = run_ort(path, xi).reshape(-1)
        np.testing.assert_allclose(got[i].reshape(-1), ref, rtol=1e-5, atol=1e-5)
    return bm


# ---------------------------------------------------------------------------------- affine
@pytest.mark.parametrize("transB,alpha,beta,c_shape", [
    (0, 1.0, 1.0, (4,)), (1, 1.0, 1.0, (4,)), (1, 0.5, 2.0, (1, 4)), (0, 2.0, 0.5, ()),
    (1, 1.0, 1.0, None)])
def test_gemm_variants_match_onnxruntime(tmp_path, transB, alpha, beta, c_shape):
    W = _f(4, 6) if transB else _f(6, 4)
    inits = {"W": W}
    ins = ["x", "W"]
    if c_shape is not None:
        inits["C"] = _f(*c_shape) if c_shape else np.float32(0.3)
        ins.append("C")
    node = helper.make_node("Gemm", ins, ["y"], transB=transB, alpha=alpha, beta=beta)
    assert_matches_ort(build([node], ["N", 6], inits=inits), tmp_path, (6,))


def test_gemm_with_transposed_input_is_rejected_as_batch_mixing(tmp_path):
    node = helper.make_node("Gemm", ["x", "W"], ["y"], transA=1)
    path = save(build([node], [6, 1], inits={"W": _f(6, 3)}), tmp_path)
    with pytest.raises(UnsupportedOpError, match="Gemm"):
        load_onnx(path)


def test_matmul_with_the_constant_on_the_right_and_on_the_left(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["A", "r3"], ["m"]),  # (5, 3) @ (1, 3, 1)
             helper.make_node("Reshape", ["r", "s3"], ["r3"]),
             helper.make_node("Reshape", ["m", "s2"], ["y"])]
    nodes = [nodes[0], nodes[1], nodes[3], nodes[2], nodes[4]]
    inits = {"W": _f(4, 3), "A": _f(5, 3), "s3": np.array([1, 3, 1], np.int64),
             "s2": np.array([1, 5], np.int64)}
    assert_matches_ort(build(nodes, [1, 4], inits=inits), tmp_path, (4,))


def test_matmul_of_a_vector_input_without_batch_axis(tmp_path):
    # test_tiny-style: W @ x with x of shape [2] (the whole tensor is one example)
    nodes = [helper.make_node("MatMul", ["W", "x"], ["h"]),
             helper.make_node("Add", ["h", "b"], ["y"])]
    bm = assert_matches_ort(build(nodes, [2], inits={"W": _f(3, 2), "b": _f(3)}), tmp_path,
                            (2,), batch_dim=False)
    assert bm.graph.output_shape == (3,)


def test_matmul_of_two_input_dependent_tensors_is_a_matmul_op(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("MatMul", ["x", "r"], ["y"])]
    bm = assert_matches_ort(build(nodes, [1, 3, 3]), tmp_path, (3, 3))
    assert [n.op.kind for n in bm.graph.op_nodes()] == ["relu", "matmul"]


@pytest.mark.parametrize("attrs", [
    dict(pads=[1, 1, 1, 1], strides=[1, 1]),
    dict(pads=[0, 0, 0, 0], strides=[2, 2], dilations=[2, 2]),
    dict(pads=[1, 2, 1, 2], strides=[2, 1], group=2),
    dict(pads=[0, 1, 1, 0]),  # asymmetric: an explicit pad op
    dict(auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(auto_pad="VALID"),
])
def test_conv_attributes_match_onnxruntime(tmp_path, attrs):
    g = attrs.get("group", 1)
    W = _f(4, 4 // g, 3, 3, scale=0.3)
    node = helper.make_node("Conv", ["x", "W", "B"], ["y"], kernel_shape=[3, 3], **attrs)
    assert_matches_ort(build([node], ["N", 4, 7, 8], inits={"W": W, "B": _f(4)}), tmp_path,
                       (4, 7, 8))


def test_conv1d_matches_onnxruntime(tmp_path):
    node = helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1], strides=[2])
    assert_matches_ort(build([node], [1, 2, 9], inits={"W": _f(3, 2, 3)}), tmp_path, (2, 9))


def test_batchnorm_matches_onnxruntime(tmp_path):
    inits = {"s": _f(3), "b": _f(3), "m": _f(3), "v": np.abs(_f(3)) + 0.5}
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                              epsilon=1e-3)]
    assert_matches_ort(build(nodes, ["N", 3, 4, 4], inits=inits), tmp_path, (3, 4, 4))
    # on a (N, C) input too
    assert_matches_ort(build(nodes, ["N", 3], inits=inits), tmp_path, (3,))


# ---------------------------------------------------------------------------------- shapes
def test_flatten_reshape_with_shape_arithmetic_dynamic_batch(tmp_path):
    """``x.view(x.size(0), -1)`` as PyTorch exports it: Shape -> Gather -> Unsqueeze -> Concat."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Shape", ["r"], ["shp"]),
             helper.make_node("Gather", ["shp", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("Cast", ["target"], ["target64"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["r", "target64"], ["flat"]),
             helper.make_node("Gemm", ["flat", "W"], ["y"], transB=1)]
    inits = {"zero": np.array(0, np.int64), "ax0": np.array([0], np.int64),
             "minus1": np.array([-1], np.int64), "W": _f(5, 2 * 3 * 3)}
    bm = assert_matches_ort(build(nodes, ["batch", 2, 3, 3], inits=inits), tmp_path, (2, 3, 3))
    kinds = [n.op.kind for n in bm.graph.op_nodes()]
    assert kinds == ["relu", "reshape", "linear"]


def test_flatten_of_a_fixed_batch_of_one(tmp_path):
    # mnist_fc style: input [1, 784, 1] -> Flatten -> Gemm
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "b"], ["y"], transB=1)]
    bm = assert_matches_ort(build(nodes, [1, 12, 1], inits={"W": _f(4, 12), "b": _f(4)}),
                            tmp_path, (12, 1))
    assert bm.graph.output_shape == (4,)


def test_reshape_constant_holding_the_batch_size_one_is_a_per_sample_reshape(tmp_path):
    nodes = [helper.make_node("Reshape", ["x", "s"], ["f"]),
             helper.make_node("MatMul", ["f", "W"], ["y"])]
    inits = {"s": np.array([1, 12], np.int64), "W": _f(12, 3)}
    bm = assert_matches_ort(build(nodes, [1, 3, 4], inits=inits), tmp_path, (3, 4))
    x = torch.randn(5, 3, 4)  # any batch size afterwards
    assert bm(x).shape == (5, 3)


@pytest.mark.parametrize("opset", [9, 11, 13, 17])
def test_squeeze_unsqueeze_across_opsets(tmp_path, opset):
    if opset < 13:
        nodes = [helper.make_node("Unsqueeze", ["x"], ["u"], axes=[2]),
                 helper.make_node("Squeeze", ["u"], ["y"], axes=[2])]
        inits = {}
    else:
        nodes = [helper.make_node("Unsqueeze", ["x", "a"], ["u"]),
                 helper.make_node("Squeeze", ["u", "a"], ["y"])]
        inits = {"a": np.array([2], np.int64)}
    nodes.append(helper.make_node("Relu", ["y"], ["z"]))
    assert_matches_ort(build(nodes, ["N", 3, 4], out_name="z", inits=inits, opset=opset),
                       tmp_path, (3, 4))


def test_normalisation_sub_div_then_linear(tmp_path):
    nodes = [helper.make_node("Sub", ["x", "mean"], ["c"]),
             helper.make_node("Div", ["c", "std"], ["n"]),
             helper.make_node("Flatten", ["n"], ["f"]),
             helper.make_node("MatMul", ["f", "W"], ["y"])]
    inits = {"mean": np.array([0.5, 0.4], np.float32).reshape(1, 2, 1, 1),
             "std": np.array([0.2, 0.3], np.float32).reshape(1, 2, 1, 1), "W": _f(8, 3)}
    assert_matches_ort(build(nodes, [1, 2, 2, 2], inits=inits), tmp_path, (2, 2, 2))


def test_constant_minus_input_and_residual_add(tmp_path):
    nodes = [helper.make_node("Sub", ["one", "x"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Add", ["r", "x"], ["s"]),
             helper.make_node("Mul", ["s", "k"], ["y"])]
    inits = {"one": np.float32(1.0), "k": _f(5)}
    assert_matches_ort(build(nodes, ["N", 5], inits=inits), tmp_path, (5,))


def test_transpose_matches_onnxruntime(tmp_path):
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Relu", ["t"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[0, 3, 1, 2])]
    assert_matches_ort(build(nodes, ["N", 2, 3, 4]), tmp_path, (2, 3, 4))


def test_transpose_moving_a_batch_axis_of_one_is_a_reshape(tmp_path):
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
             helper.make_node("MatMul", ["W", "t"], ["y"])]
    bm = assert_matches_ort(build(nodes, [1, 3], inits={"W": _f(2, 3)}), tmp_path, (3,))
    assert bm.graph.output_shape == (2, 1)


def test_concat_of_input_dependent_and_constant_pieces(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Concat", ["x", "r", "c"], ["y"], axis=1)]
    bm = assert_matches_ort(build(nodes, ["N", 3, 2], inits={"c": _f(1, 2, 2)}), tmp_path,
                            (3, 2))
    assert bm.graph.output_shape == (8, 2)


@pytest.mark.parametrize("opset", [9, 11, 18])
def test_pad_across_opsets(tmp_path, opset):
    pads = [0, 0, 1, 2, 0, 0, 2, 0]
    if opset < 11:
        nodes = [helper.make_node("Pad", ["x"], ["y"], pads=pads, value=0.5)]
        inits = {}
    else:
        nodes = [helper.make_node("Pad", ["x", "p", "v"], ["y"])]
        inits = {"p": np.array(pads, np.int64), "v": np.float32(0.5)}
    assert_matches_ort(build(nodes, ["N", 2, 3, 3], inits=inits, opset=opset), tmp_path,
                       (2, 3, 3))


# ---------------------------------------------------------------------------------- pooling
@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[2, 2], strides=[2, 2]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[1, 1], ceil_mode=1),
])
def test_maxpool_matches_onnxruntime(tmp_path, attrs):
    node = helper.make_node("MaxPool", ["x"], ["y"], **attrs)
    assert_matches_ort(build([node], ["N", 2, 7, 7]), tmp_path, (2, 7, 7))


@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[2, 2], strides=[2, 2]),
    dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0),
])
def test_averagepool_matches_onnxruntime(tmp_path, attrs):
    node = helper.make_node("AveragePool", ["x"], ["y"], **attrs)
    assert_matches_ort(build([node], ["N", 2, 6, 6]), tmp_path, (2, 6, 6))


def test_global_average_pool_matches_onnxruntime(tmp_path):
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    assert_matches_ort(build(nodes, ["N", 3, 4, 5]), tmp_path, (3, 4, 5))


# ---------------------------------------------------------------------------------- activations
@pytest.mark.parametrize("op,attrs", [
    ("Sigmoid", {}), ("Tanh", {}), ("LeakyRelu", {"alpha": 0.2}), ("Relu", {}),
    ("Abs", {}), ("Elu", {"alpha": 0.7}), ("Softplus", {})])
def test_activations_match_onnxruntime(tmp_path, op, attrs):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node(op, ["h"], ["y"], **attrs)]
    assert_matches_ort(build(nodes, ["N", 4], inits={"W": _f(4, 6)}), tmp_path, (4,), scale=2)


def test_clip_as_relu6(tmp_path):
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])]
    inits = {"lo": np.float32(0.0), "hi": np.float32(6.0)}
    assert_matches_ort(build(nodes, ["N", 5], inits=inits, opset=13), tmp_path, (5,), scale=5)


# ---------------------------------------------------------------------------------- misc ops
def test_identity_dropout_constant_and_reductions(tmp_path):
    w = numpy_helper.from_array(_f(3), "cw")
    nodes = [helper.make_node("Constant", [], ["c"], value=w),
             helper.make_node("Identity", ["x"], ["i"]),
             helper.make_node("Dropout", ["i"], ["d"]),
             helper.make_node("Add", ["d", "c"], ["a"]),
             helper.make_node("ReduceMean", ["a"], ["y"], axes=[2], keepdims=0)]
    assert_matches_ort(build(nodes, ["N", 2, 3], opset=13), tmp_path, (2, 3))


def test_slice_gather_and_split(tmp_path):
    nodes = [helper.make_node("Slice", ["x", "st", "en", "ax"], ["s"]),
             helper.make_node("Gather", ["s", "idx"], ["g"], axis=2),
             helper.make_node("Split", ["g", "sizes"], ["p", "q"], axis=1),
             helper.make_node("Sub", ["p", "q"], ["y"])]
    inits = {"st": np.array([1], np.int64), "en": np.array([5], np.int64),
             "ax": np.array([2], np.int64), "idx": np.array([0, 2, 3], np.int64),
             "sizes": np.array([2, 2], np.int64)}
    assert_matches_ort(build(nodes, ["N", 4, 6], inits=inits, opset=13), tmp_path, (4, 6))


def test_old_opset_initializers_listed_as_graph_inputs(tmp_path):
    """IR < 4 files (ACAS Xu from MATLAB) list every initializer as a graph input too."""
    W, b = _f(5, 3), _f(3)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5]),
              helper.make_tensor_value_info("W", TensorProto.FLOAT, [5, 3]),
              helper.make_tensor_value_info("b", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 3
    bm = assert_matches_ort(model, tmp_path, (5,))
    assert [n.op.kind for n in bm.graph.op_nodes()] == ["linear"]  # bias fused into the linear


def test_double_precision_model(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    model = build(nodes, ["N", 3], inits={"W": _f(3, 2).astype(np.float64)},
                  elem=TensorProto.DOUBLE)
    path = save(model, tmp_path)
    bm = load_onnx(path)
    x = torch.randn(4, 3, dtype=torch.float64)
    ref = run_ort(path, x.numpy())
    np.testing.assert_allclose(bm(x).detach().numpy(), ref, rtol=1e-12)


# ---------------------------------------------------------------------------------- module
def test_imported_tensors_are_live_parameters_of_the_module(tmp_path):
    node = helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)
    bm = load_onnx(save(build([node], ["N", 3], inits={"W": _f(2, 3), "b": _f(2)}), tmp_path))
    x = torch.randn(2, 3)
    before = bm(x).clone()
    names = dict(bm.model.named_parameters())
    assert any("W" in k for k in names)
    with torch.no_grad():
        for p in bm.model.parameters():
            p.add_(1.0)
    assert not torch.allclose(bm(x), before)
    # and the check against onnxruntime notices that the graph no longer matches the file
    with pytest.raises(BoundGraphError, match="does not reproduce onnxruntime"):
        check_against_onnxruntime(bm)


def test_bounds_on_imported_model_are_sound(tmp_path):
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], transB=1)]
    inits = {"W1": _f(8, 4), "b1": _f(8), "W2": _f(3, 8), "b2": _f(3)}
    bm = load_onnx(save(build(nodes, ["N", 4], inits=inits), tmp_path))
    x = torch.randn(2, 4)
    pts = x.unsqueeze(0) + 0.1 * (2 * torch.rand(500, 2, 4) - 1)
    with torch.no_grad():
        out = bm(pts.reshape(-1, 4)).reshape(500, 2, 3)
    for method in bg.METHODS:
        lb, ub = bm.compute_bounds(x, bg.LinfBall(0.1), method=method)
        assert (out >= lb - 1e-5).all() and (out <= ub + 1e-5).all()


def test_gzip_compressed_file(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"])
    model = build([node], ["N", 3])
    path = tmp_path / "m.onnx.gz"
    path.write_bytes(gzip.compress(model.SerializeToString()))
    bm = load_onnx(path)
    assert torch.equal(bm(torch.tensor([[-1.0, 0.0, 2.0]])), torch.tensor([[0.0, 0.0, 2.0]]))


# ---------------------------------------------------------------------------------- errors
def test_corrupt_or_non_onnx_file_gives_one_readable_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff\x13 at all" * 3)
    with pytest.raises(InputError, match="bad.onnx.*not a valid ONNX model"):
        load_onnx(bad)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_onnx(empty)
    with pytest.raises(InputError, match="cannot read"):
        load_onnx(tmp_path / "missing.onnx")
    badgz = tmp_path / "bad.onnx.gz"
    badgz.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(InputError, match="gzip"):
        load_onnx(badgz)


def test_unsupported_ops_are_all_listed_in_one_error(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="first_relu"),
             helper.make_node("Hardmax", ["r"], ["s"], name="my_hardmax", axis=1),
             helper.make_node("Relu", ["s"], ["t"]),
             helper.make_node("Round", ["t"], ["e"], name="my_round"),
             helper.make_node("Add", ["e", "r"], ["y"])]
    path = save(build(nodes, ["N", 4], opset=13), tmp_path, "two_bad.onnx")
    with pytest.raises(UnsupportedOpError) as info:
        load_onnx(path)
    msg = str(info.value)
    assert "my_hardmax" in msg and "Hardmax (opset 13)" in msg
    assert "my_round" in msg and "Round (opset 13)" in msg
    assert "two_bad.onnx" in msg
    assert len(info.value.nodes) == 2


def test_model_with_two_inputs_imports_with_both(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 2]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    bm = load_onnx(save(model, tmp_path))
    assert bm.graph.input_names == ("a", "b")
    a, b = torch.ones(1, 2), torch.full((1, 2), 2.0)
    assert torch.equal(bm(a, b), a + b)
    with pytest.raises(InputError, match="2 input"):
        bm(a)


@pytest.mark.parametrize("sa,sb,want", [
    ((3,), (3,), ()), ((3,), (3, 4), (4,)), ((2, 3), (3,), (2,)),
    ((5, 1, 2, 3), (4, 3, 6), (5, 4, 2, 6)), ((7,), (2, 7, 5), (2, 5)),
    ((40000, 30000), (30000, 40000), (40000, 40000)),  # far too big to allocate
])
def test_matmul_output_shape_follows_numpy_without_allocating(sa, sb, want):
    from boundgraph.frontends.onnx_import import _matmul_shape

    assert _matmul_shape(sa, sb) == want
    if max(max(sa), max(sb)) < 100:
        assert want == np.matmul(np.zeros(sa), np.zeros(sb)).shape
