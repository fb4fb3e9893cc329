"""ONNX export: exported files run in onnxruntime with the module's outputs for any batch size,
and importing them back gives the same outputs and the same bounds as the traced module."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import boundgraph as bg
from boundgraph.errors import BoundGraphError, InputError
from models import get_model

SMALL = dict(in_channels=1, in_size=12, num_classes=5)


def run_ort(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def assert_close(a, b, rtol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(1.0, float(np.abs(b).max()))
    assert np.abs(a - b).max() <= rtol * scale, np.abs(a - b).max()


def _randomise_bn(model):
    """Non-trivial running statistics, so that BatchNorm export is really checked."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


@pytest.mark.parametrize("name", ["mlp", "cnn_3layer", "cnn7", "resnet_small", "densenet_small"])
def test_zoo_model_exports_with_dynamic_batch_and_matches_onnxruntime(tmp_path, name):
    model = _randomise_bn(get_model(name, **SMALL)).eval()
    x = torch.rand(2, 1, 12, 12)
    path = bg.export_onnx(model, x, tmp_path / f"{name}.onnx")
    m = onnx.load(path)
    dim0 = m.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param == "batch"
    for B in (1, 3, 7):
        xb = torch.rand(B, 1, 12, 12)
        with torch.no_grad():
            assert_close(run_ort(path, xb), model(xb).numpy())


@pytest.mark.parametrize("name", ["mlp", "cnn_3layer", "resnet_small"])
def test_round_trip_gives_same_outputs_and_bounds_as_the_traced_module(tmp_path, name):
    model = _randomise_bn(get_model(name, **SMALL)).eval()
    x = torch.rand(2, 1, 12, 12)
    traced = bg.BoundedModule(model, x)
    path = bg.export_onnx(traced, x, tmp_path / "m.onnx")
    imported = bg.load_onnx(path)
    with torch.no_grad():
        assert_close(imported(x).numpy(), traced(x).numpy())
    C = bg.margin_spec(torch.tensor([0, 3]), 5)
    pert = bg.LinfBall(0.02, 0.0, 1.0)
    with torch.no_grad():
        for method in ("ibp", "crown-ibp"):
            for spec in (None, C):
                lt, ut = traced.compute_bounds(x, pert, method=method, C=spec)
                li, ui = imported.compute_bounds(x, pert, method=method, C=spec)
                assert_close(li.numpy(), lt.numpy())
                assert_close(ui.numpy(), ut.numpy())


def test_round_trip_crown_bounds_equal_on_a_small_mlp(tmp_path):
    model = get_model("mlp", in_channels=1, in_size=4, num_classes=3, hidden=(8, 8)).eval()
    x = torch.rand(3, 1, 4, 4)
    traced = bg.BoundedModule(model, x)
    imported = bg.load_onnx(bg.export_onnx(model, x, tmp_path / "m.onnx"))
    pert = bg.LinfBall(0.05, 0.0, 1.0)
    with torch.no_grad():
        lt, ut = traced.compute_bounds(x, pert, method="crown")
        li, ui = imported.compute_bounds(x, pert, method="crown")
    assert_close(li.numpy(), lt.numpy())
    assert_close(ui.numpy(), ut.numpy())


class _Mixed(nn.Module):
    """Ops beyond the zoo: activations, pooling, padding, concatenation, permute, slicing,
    reductions, normalisation, residual arithmetic."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 2, stride=2)
        self.fc = nn.Linear(12 + 4 + 3, 5)
        self.register_buffer("mean", torch.tensor([0.3, 0.6]).view(1, 2, 1, 1))

    def forward(self, x):
        x = (x - self.mean) / 0.5
        h = torch.nn.functional.leaky_relu(self.conv(x), 0.1)
        h = torch.cat([torch.sigmoid(h), torch.tanh(h)], dim=1)
        h = nn.functional.max_pool2d(h, 2)                                  # 8 x 4 x 4
        h = nn.functional.pad(h, (1, 0, 1, 0))                               # 8 x 4 x 4
        h = torch.relu(self.conv2(h))                                       # 4 x 2 x 2
        p = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)[:, :12]           # 12
        m = h.mean(dim=(2, 3))                                              # 4
        s = x[:, :, 1, :].reshape(x.shape[0], -1)[:, ::4]                   # 3
        return self.fc(torch.cat([p, m, s], dim=1)) + 0.5 * torch.abs(m[:, 1:2])


def test_model_with_many_op_kinds_exports_from_the_bound_graph(tmp_path):
    model = _Mixed().eval()
    x = torch.rand(2, 2, 6, 6)
    bm = bg.BoundedModule(model, x)
    path = bg.export_onnx(bm, x, tmp_path / "mixed.onnx")
    producer = onnx.load(path).producer_name
    assert producer == "boundgraph"  # written from the bound graph, no fallback
    xb = torch.rand(4, 2, 6, 6)
    with torch.no_grad():
        assert_close(run_ort(path, xb), model(xb).numpy())
    imported = bg.load_onnx(path)
    with torch.no_grad():
        assert_close(imported(xb).numpy(), model(xb).numpy())


def test_imported_model_re_exports(tmp_path):
    model = get_model("cnn_3layer", **SMALL).eval()
    x = torch.rand(2, 1, 12, 12)
    first = bg.load_onnx(bg.export_onnx(model, x, tmp_path / "a.onnx"))
    second = bg.export_onnx(first, x, tmp_path / "b.onnx")
    with torch.no_grad():
        assert_close(run_ort(second, x), model(x).numpy())


def test_export_restores_training_mode_and_uses_running_statistics(tmp_path):
    model = _randomise_bn(get_model("cnn7", **SMALL))
    model.train()
    x = torch.rand(2, 1, 12, 12)
    path = bg.export_onnx(model, x, tmp_path / "m.onnx")
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    with torch.no_grad():
        assert_close(run_ort(path, x), model(x).numpy())


def test_export_rejects_a_mismatching_example(tmp_path):
    model = get_model("mlp", **SMALL).eval()
    bm = bg.BoundedModule(model, torch.rand(2, 1, 12, 12))
    with pytest.raises(InputError, match="does not match"):
        bg.export_onnx(bm, torch.rand(2, 1, 10, 10), tmp_path / "m.onnx")
    with pytest.raises(InputError):
        bg.export_onnx("not a model", torch.rand(2, 3), tmp_path / "m.onnx")
    for opset in (11, 18):  # operator signatures the emitters do not follow
        with pytest.raises(InputError, match="opset"):
            bg.export_onnx(bm, torch.rand(2, 1, 12, 12), tmp_path / "m.onnx", opset=opset)


def test_export_check_catches_a_file_that_does_not_match(tmp_path, monkeypatch):
    from boundgraph.frontends import onnx_export

    model = get_model("mlp", **SMALL).eval()
    x = torch.rand(2, 1, 12, 12)
    orig = onnx_export.EMITTERS["relu"]
    monkeypatch.setitem(onnx_export.EMITTERS, "relu",
                        lambda w, node, ins, hint: w.add("Sigmoid", [ins[0]], hint))
    with pytest.raises(BoundGraphError, match="does not reproduce the module"):
        bg.export_onnx(model, x, tmp_path / "m.onnx")
    assert onnx_export.EMITTERS["relu"] is not orig


def test_export_cli_writes_a_checked_file(tmp_path, capsys):
    from boundgraph.cli import main

    out = tmp_path / "cli.onnx"
    assert main(["export", "--model", "cnn_3layer", "--model-kwargs",
                 '{"in_size": 12, "num_classes": 5}', "--out", str(out)]) == 0
    assert out.exists()
    bm = bg.load_onnx(out)
    assert bm.graph.input_shape == (1, 12, 12)
    assert main(["export", "--model", "no_such_model", "--out", str(out)]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_export_cli_loads_a_checkpoint_into_a_model_built_with_kwargs(tmp_path):
    from boundgraph.cli import main

    torch.manual_seed(0)
    model = get_model("cnn_3layer", in_size=12, num_classes=5).eval()
    ck = tmp_path / "small.pt"
    torch.save({"model_state": model.state_dict(), "model_name": "cnn_3layer"}, ck)
    out = tmp_path / "small.onnx"
    assert main(["export", "--model", "cnn_3layer", "--checkpoint", str(ck), "--model-kwargs",
                 '{"in_size": 12, "num_classes": 5}', "--out", str(out)]) == 0
    x = torch.rand(3, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(bg.load_onnx(out)(x), model(x), rtol=1e-5, atol=1e-5)
