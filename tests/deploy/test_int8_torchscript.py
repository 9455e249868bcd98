"""PyTorch's own int8 (sknet export --format torchscript --quantize int8) and TorchScript files run by sknet eval
and predict. Needs torch alone (its x86 quantized engine): a tiny SKNet trained on synthetic data, calibrated on
a folder of its training images; held out: the synthetic test split."""

import json

import pytest
import torch

import sknet
from sknet.cli import main
from sknet.data.datasets import build_dataset

pytestmark = pytest.mark.skipif(
    "x86" not in torch.backends.quantized.supported_engines, reason="needs PyTorch's x86 quantized engine"
)


@pytest.fixture(scope="module")
def scripted(trained_tiny, tmp_path_factory):
    """(weights, fp32 .pt, int8 .pt, calibration folder) of a tiny trained SKNet."""
    weights, folder = trained_tiny
    root = tmp_path_factory.mktemp("int8ts")
    fp32, int8 = root / "m.pt", root / "m.int8.pt"
    assert main(["export", "--weights", weights, "--format", "torchscript", "--out", str(fp32)]) == 0
    common = ["export", "--weights", weights, "--format", "torchscript", "--quantize", "int8", "--out", str(int8)]
    assert main([*common, "--calibration", str(folder), "--calibration-size", "48"]) == 0
    return weights, fp32, int8, folder


def test_int8_torchscript_records_int8_and_the_preprocessing_and_agrees_with_fp32(scripted):
    from sknet.deploy.scripted import ScriptedModel, is_torchscript

    weights, fp32, int8, _ = scripted
    assert is_torchscript(int8) and is_torchscript(fp32) and not is_torchscript(weights)
    model, q, f = sknet.create_model(weights=weights).eval(), ScriptedModel(int8), ScriptedModel(fp32)
    assert q.precision == "int8" and f.precision == "fp32"
    assert q.data_config == f.data_config == model.data_config  # the same preprocessing record
    record = q.quantization
    assert record["engine"] == "x86" and record["bn_folded"] and record["calibration"]["images"] == 48
    assert record["float_modules"] == ["Fuse", "SelectAttention"]
    assert "quantized::conv2d" in str(q.module.inlined_graph)  # integer convolutions, not a float graph
    test = build_dataset("synthetic", None, "test")
    x = (test.images.float() / 255 - 0.5) / 0.25  # the record's mean/std (0.5, 0.25)
    with torch.no_grad():
        ref, out = model(x), q(x)
    assert out.shape == ref.shape == (256, 4)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.99
    assert (out - ref).abs().mean() <= 0.05 * ref.abs().mean()


def test_eval_and_predict_run_torchscript_files_like_weights(scripted, capsys):
    weights, fp32, int8, folder = scripted
    capsys.readouterr()
    results = []
    for path in (weights, fp32, int8):
        assert main(["eval", "--weights", str(path), "--device", "cpu", "--json"]) == 0
        (result,) = json.loads(capsys.readouterr().out)
        results.append(result)
    assert {r["dataset"] for r in results} == {"synthetic"} and results[1]["acc1"] == results[0]["acc1"]
    assert abs(results[2]["acc1"] - results[0]["acc1"]) <= 0.02 and results[2]["images"] == 256
    image = next(folder.rglob("*.png"))
    assert main(["predict", str(image), "--weights", str(int8), "--json"]) == 0
    (top,) = json.loads(capsys.readouterr().out)
    assert top["top"][0]["class"] == image.parent.name
    assert main(["predict", str(image), "--weights", str(int8), "--model", "sknet_tiny"]) == 2
    assert "does not apply" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--calibration-method", "percentile"], "minmax, entropy"),
        (["--activations", "int8"], "applies to --format onnx"),
    ],
)
def test_onnx_only_options_are_refused_for_torchscript_before_any_work(
    scripted, tmp_path, capsys, monkeypatch, option, message
):
    import sknet.deploy.calibration

    monkeypatch.setattr(sknet.deploy.calibration, "calibration_images", lambda *a, **k: pytest.fail("work started"))
    out = tmp_path / "m.pt"
    args = ["export", "--weights", scripted[0], "--format", "torchscript", "--quantize", "int8", "--out", str(out)]
    assert main([*args, "--calibration", str(scripted[3]), *option]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and not out.exists()
