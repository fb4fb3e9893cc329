"""ONNX models of several inputs: a two-input torch model exports with one ONNX input per
argument and imports back as a module of two inputs whose outputs and bounds (one input
perturbed, the other exact) agree with the torch model; hand-built files of two inputs import
and run; a wrong number of inputs gives one clear error."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import boundgraph as bg
from boundgraph.errors import BoundGraphError, InputError
from boundgraph.frontends.onnx_import import check_against_onnxruntime, load_onnx

SHAPE = (1, 6, 6)


class _ImageMask(nn.Module):
    """An image multiplied by a mask, through a convolution, plus a linear branch of the mask."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 6 * 6, 4)
        self.mask_fc = nn.Linear(36, 4)

    def forward(self, image, mask):
        h = torch.relu(self.conv(image * mask))
        return self.fc(h.flatten(1)) + self.mask_fc(mask.flatten(1))


def _batch(B, seed):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand((B, *SHAPE), generator=g)
    mask = (torch.rand((B, *SHAPE), generator=g) > 0.3).float()
    return image, mask


def assert_close(a, b, rtol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(1.0, float(np.abs(b).max()))
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= rtol * scale, np.abs(a - b).max()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The torch model and its exported file (checked against onnxruntime by the export)."""
    torch.manual_seed(0)
    model = _ImageMask().eval()
    path = bg.export_onnx(model, _batch(2, 0), tmp_path_factory.mktemp("mi") / "m.onnx")
    return model, path


@pytest.fixture(scope="module")
def imported(exported):
    return load_onnx(exported[1])


# ------------------------------------------------------------------------- export and import
def test_two_input_model_exports_one_onnx_input_per_argument_with_a_dynamic_batch(exported):
    model, path = exported
    m = onnx.load(str(path))
    assert m.producer_name == "boundgraph"  # written from the bound graph
    assert [i.name for i in m.graph.input] == ["image", "mask"]
    for i in m.graph.input:
        dims = i.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch"
        assert [d.dim_value for d in dims[1:]] == list(SHAPE)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for B in (1, 5):
        image, mask = _batch(B, 10 + B)
        got = sess.run(None, {"image": image.numpy(), "mask": mask.numpy()})[0]
        with torch.no_grad():
            assert_close(got, model(image, mask).numpy())


def test_reimported_two_input_model_gives_the_torch_outputs_on_new_batches(exported, imported):
    model, _ = exported
    bm = imported
    assert bm.graph.input_names == ("image", "mask")
    assert bm.graph.input_shapes == (SHAPE, SHAPE)
    info = bm.model.onnx_info
    assert info.input_names == ("image", "mask")
    assert info.sample_shapes == (SHAPE, SHAPE)
    assert info.input_name == "image" and info.sample_shape == SHAPE  # the first input's
    assert info.dynamic_batch
    for B in (1, 3, 7):
        image, mask = _batch(B, 20 + B)
        with torch.no_grad():
            want = model(image, mask).numpy()
            assert_close(bm(image, mask).numpy(), want)
            assert_close(bm.model(image, mask).numpy(), want)
        assert_close(info.run(image, mask), want)
    assert check_against_onnxruntime(bm, input_box=((0.0 * np.ones(36), np.ones(36)), None)) \
        <= 1e-5


def test_reimported_two_input_model_re_exports_with_the_same_input_names(exported, imported,
                                                                          tmp_path):
    model, _ = exported
    path = bg.export_onnx(imported, _batch(2, 3), tmp_path / "again.onnx")
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["image", "mask"]
    image, mask = _batch(4, 4)
    with torch.no_grad():
        assert_close(load_onnx(path)(image, mask).numpy(), model(image, mask).numpy())


def test_two_input_export_falls_back_on_torch_with_both_inputs(tmp_path, monkeypatch):
    from boundgraph.frontends import onnx_export

    monkeypatch.delitem(onnx_export.EMITTERS, "relu")  # no emitter: the torch exporter writes it
    torch.manual_seed(1)
    model = _ImageMask().eval()
    path = bg.export_onnx(model, _batch(2, 5), tmp_path / "torch.onnx")
    m = onnx.load(str(path))
    assert m.producer_name != "boundgraph"
    assert [i.name for i in m.graph.input] == ["image", "mask"]
    image, mask = _batch(3, 6)
    with torch.no_grad():
        assert_close(load_onnx(path)(image, mask).numpy(), model(image, mask).numpy())


def test_one_input_model_keeps_the_input_name_argument(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).eval()
    x = torch.rand(2, *SHAPE)
    path = bg.export_onnx(model, x, tmp_path / "one.onnx")
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["input"]
    path = bg.export_onnx(model, x, tmp_path / "named.onnx", input_name="pixels")
    bm = load_onnx(path)
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["pixels"]
    assert bm.graph.input_names == ("pixels",)
    info = bm.model.onnx_info
    assert (info.input_name, info.input_shape, info.sample_shape) == ("pixels", (1, *SHAPE),
                                                                       SHAPE)
    assert info.input_names == ("pixels",) and info.sample_shapes == (SHAPE,)
    assert info.run(x).shape == (2, 3)


# ------------------------------------------------------------------------------------ bounds
@pytest.mark.parametrize("method", bg.METHODS)
def test_bounds_with_only_the_image_perturbed_contain_samples_varying_the_image(
        exported, imported, method):
    model, _ = exported
    image, mask = _batch(3, 30)
    eps = 0.1
    for pert in ({0: bg.LinfBall(eps)}, {"image": bg.LinfBall(eps), "mask": None}):
        with torch.no_grad():
            lb, ub = imported.compute_bounds((image, mask), pert, method=method)
        g = torch.Generator().manual_seed(1)
        S = 200
        delta = (torch.rand((S, *image.shape), generator=g) * 2 - 1) * eps
        delta[: S // 2] = torch.sign(delta[: S // 2]) * eps  # box corners
        with torch.no_grad():
            ys = torch.stack([model(image + d, mask) for d in delta])  # mask held exact
        tol = 1e-5 * max(1.0, float(ys.abs().max()))
        assert torch.all(ys >= lb - tol) and torch.all(ys <= ub + tol)
        assert torch.all(ub - lb > 0)  # the image moves the outputs


@pytest.mark.parametrize("method", bg.METHODS)
def test_perturbing_no_input_gives_the_forward_pass(exported, imported, method):
    model, _ = exported
    image, mask = _batch(2, 40)
    with torch.no_grad():
        y = model(image, mask)
        lb, ub = imported.compute_bounds((image, mask), {}, method=method)
    assert torch.allclose(lb, y, atol=1e-5, rtol=0) and torch.allclose(ub, y, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------- hand-built files
def _two_input_file(tmp_path, a_shape, b_shape, b_elem=TensorProto.FLOAT, name="two.onnx"):
    """``y = (a * b) @ W + relu(b) @ V`` with inputs ``a`` and ``b`` (3 values each)."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((3, 2)).astype(np.float32)
    V = rng.standard_normal((3, 2)).astype(np.float32)
    nodes = [helper.make_node("Mul", ["a", "b"], ["t"]),
             helper.make_node("MatMul", ["t", "W"], ["u"]),
             helper.make_node("Relu", ["b"], ["r"]),
             helper.make_node("MatMul", ["r", "V"], ["v"]),
             helper.make_node("Add", ["u", "v"], ["y"])]
    graph = helper.make_graph(
        nodes, "two",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, a_shape),
         helper.make_tensor_value_info("b", b_elem, b_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(V, "V")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 8)
    path = tmp_path / name
    onnx.save_model(model, str(path))
    return path, W, V


@pytest.mark.parametrize("a_shape,b_shape", [(["N", 3], ["N", 3]), ([1, 3], [1, 3]),
                                             (["N", 3], [3])])
def test_hand_built_file_of_two_inputs_imports_and_runs(tmp_path, a_shape, b_shape):
    path, W, V = _two_input_file(tmp_path, a_shape, b_shape)
    bm = load_onnx(path)
    assert bm.graph.input_names == ("a", "b")
    assert bm.graph.input_shapes == ((3,), (3,))
    info = bm.model.onnx_info
    assert info.input_names == ("a", "b")
    assert info.input_shapes == (tuple(1 if d == "N" else d for d in a_shape),
                                 tuple(1 if d == "N" else d for d in b_shape))
    a = torch.randn(4, 3)
    b = torch.randn(4, 3)
    want = (a * b).numpy() @ W + np.maximum(b.numpy(), 0) @ V
    with torch.no_grad():
        assert_close(bm(a, b).numpy(), want)
    assert_close(info.run(a, b), want)
    box = (-np.ones(3), np.ones(3))
    assert check_against_onnxruntime(bm, input_box=(box, box)) <= 1e-5
    with torch.no_grad():
        lb, ub = bm.compute_bounds((a, b), {"b": bg.LinfBall(0.05)}, method="crown")
    assert torch.all(lb <= torch.as_tensor(want) + 1e-5)
    assert torch.all(ub >= torch.as_tensor(want) - 1e-5)


def test_file_whose_inputs_differ_in_element_type_is_refused(tmp_path):
    path, _, _ = _two_input_file(tmp_path, ["N", 3], ["N", 3], b_elem=TensorProto.DOUBLE)
    with pytest.raises(InputError, match="'b' is float64 but the first input is float32"):
        load_onnx(path, check=False)


# --------------------------------------------------------------------------------- errors
def test_wrong_number_of_inputs_to_the_imported_module_is_one_input_error(imported, tmp_path):
    image, mask = _batch(2, 50)
    with pytest.raises(InputError, match="takes 2 input"):
        imported(image)
    with pytest.raises(InputError, match="takes 2 input"):
        imported(image, mask, mask)
    with pytest.raises(InputError, match="takes 2 input"):
        imported.model(image)
    with pytest.raises(InputError, match="takes 2 input"):
        imported.model.onnx_info.run(image)
    with pytest.raises(InputError, match="takes 2 input"):
        imported.compute_bounds(image, {0: bg.LinfBall(0.1)})
    with pytest.raises(InputError, match="2 inputs"):  # one box for a model of two inputs
        check_against_onnxruntime(imported, input_box=(np.zeros(36), np.ones(36)))
    with pytest.raises(InputError, match="1 example input"):
        bg.export_onnx(imported, image, tmp_path / "bad.onnx")
    with pytest.raises(InputError, match="does not match the model's input 'mask'"):
        bg.export_onnx(imported, (image, mask[:, :, :3]), tmp_path / "bad.onnx")
    with pytest.raises(InputError, match="different batch sizes"):
        imported(image, mask[:1])


def test_export_check_compares_both_inputs(tmp_path, monkeypatch):
    from boundgraph.frontends import onnx_export

    # a wrong file (relu written as a sigmoid): the check, run on both inputs, catches it
    monkeypatch.setitem(onnx_export.EMITTERS, "relu",
                        lambda w, node, ins, hint: w.add("Sigmoid", [ins[0]], hint))
    with pytest.raises(BoundGraphError, match="does not reproduce the module"):
        bg.export_onnx(_ImageMask().eval(), _batch(2, 60), tmp_path / "m.onnx")
