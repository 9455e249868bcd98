import numpy as np
import pytest
import torch

import sknet
from sknet.cli import main
from sknet.export import export_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    from tests.convert.test_timm import randomise_bn

    return randomise_bn(sknet.create_model("sknet_tiny")).eval()


def test_onnx_export_matches_pytorch_with_a_dynamic_batch(model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    path = export_model(model, tmp_path / "m.onnx", "onnx", (1, 28, 28))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ops = {node.op_type for node in __import__("onnx").load(str(path)).graph.node}
    assert "BatchNormalization" not in ops  # the fused graph
    for batch in (1, 5):
        x = torch.randn(batch, 1, 28, 28)
        out = session.run(None, {"images": x.numpy()})[0]
        with torch.no_grad():
            ref = model(x).numpy()
        assert out.shape == (batch, 10)
        assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


def test_pt2_export_matches_pytorch_with_a_dynamic_batch(model, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)  # needs nothing beyond torch
    path = export_model(model, tmp_path / "m.pt2", "pt2", (1, 28, 28))
    program = torch.export.load(str(path))
    assert not any("batch_norm" in str(node.target) for node in program.graph.nodes)  # the fused graph
    loaded = program.module()
    for batch in (1, 5):
        x = torch.randn(batch, 1, 28, 28)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="size"):  # the program guards its input's channels
        loaded(torch.randn(2, 3, 28, 28))


def test_torchscript_export(model, tmp_path):
    path = export_model(model, tmp_path / "m.pt", "torchscript", (1, 28, 28))
    loaded = torch.jit.load(str(path))
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-5)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the model itself is not fused


def test_export_cli(tmp_path, capsys):
    assert (
        main(["export", "--model", "sknet_tiny", "--format", "torchscript", "--out", str(tmp_path / "a.pt"), "--check"])
        == 0
    )
    assert "check: batch 3" in capsys.readouterr().out
    pt2 = ["export", "--model", "sknet_tiny", "--format", "pt2", "--out", str(tmp_path / "a.pt2"), "--check"]
    assert main(pt2) == 0
    assert "check: batch 3" in capsys.readouterr().out
    assert main(["export", "--format", "onnx", "--out", str(tmp_path / "a.onnx")]) == 2
    assert "give --weights" in capsys.readouterr().err
    assert main(["export", "--model", "sknet_tiny", "--format", "onnx", "--out", str(tmp_path / "no/a.onnx")]) == 2
