"""int8 ONNX export (sknet export --quantize int8) and ONNX files run by sknet eval / predict.

A tiny SKNet trained a few steps on synthetic data, calibrated on a folder of its own training images
written as PNGs; held-out: the synthetic test split. Needs onnxruntime (the `export` extra): skipped without.
"""

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import sknet
from sknet.cli import main
from sknet.data.datasets import build_dataset

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def exported(trained_tiny, tmp_path_factory):
    """(weights, fp32 .onnx, int8 .onnx, calibration folder) of a tiny trained SKNet."""
    weights, folder = trained_tiny
    root = tmp_path_factory.mktemp("int8")
    fp32, int8 = root / "m.onnx", root / "m.int8.onnx"
    assert main(["export", "--weights", weights, "--format", "onnx", "--out", str(fp32)]) == 0
    common = ["export", "--weights", weights, "--format", "onnx", "--quantize", "int8", "--out", str(int8)]
    assert main([*common, "--calibration", str(folder), "--calibration-size", "64"]) == 0
    return weights, fp32, int8, folder


def _normalised_test_split():
    test = build_dataset("synthetic", None, "test")
    return (test.images.float() / 255 - 0.5) / 0.25, test.labels  # the record's mean/std (0.5, 0.25)


def test_int8_file_runs_records_int8_and_the_preprocessing_and_agrees_with_fp32(exported):
    import onnx
    import onnxruntime as ort

    _, fp32, int8, _ = exported
    props32 = ort.InferenceSession(str(fp32)).get_modelmeta().custom_metadata_map
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    props8 = session.get_modelmeta().custom_metadata_map
    assert {k: v for k, v in props8.items() if k != "quantization"} == props32  # the same preprocessing
    assert json.loads(props8["mean"]) == [0.5] and json.loads(props8["input_size"]) == 16
    quant = json.loads(props8["quantization"])
    assert quant["dtype"] == "int8" and quant["format"] == "QDQ" and quant["bn_folded"]
    assert quant["calibration"]["images"] == 64 and quant["calibration"]["method"] == "minmax"
    assert "Conv" in quant["quantized_op_types"] and "Softmax" in quant["float_op_types"]
    graph = onnx.load(str(int8)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "BatchNormalization" not in ops
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert int8_weights  # the conv weights are stored as int8
    x, _ = _normalised_test_split()  # held out: not the calibration images
    ref = ort.InferenceSession(str(fp32)).run(None, {"images": x.numpy()})[0]
    out = session.run(None, {"images": x.numpy()})[0]
    assert out.shape == ref.shape == (256, 4)
    agreement = (out.argmax(1) == ref.argmax(1)).mean()
    assert agreement >= 0.99, agreement
    assert np.abs(out - ref).mean() <= 0.05 * np.abs(ref).mean(), np.abs(out - ref).mean() / np.abs(ref).mean()


def test_eval_and_predict_run_onnx_files_like_weights(exported, tmp_path, capsys):
    from sknet.deploy.onnx_model import OnnxModel

    weights, fp32, int8, folder = exported
    capsys.readouterr()
    lines = []
    for path in (weights, fp32, int8):
        assert main(["eval", "--weights", str(path), "--device", "cpu", "--json"]) == 0
        (result,) = json.loads(capsys.readouterr().out)
        lines.append(result)
    assert lines[0]["dataset"] == lines[1]["dataset"] == lines[2]["dataset"] == "synthetic"  # recorded
    assert lines[1]["acc1"] == lines[0]["acc1"] and lines[1]["loss"] == pytest.approx(lines[0]["loss"], rel=1e-4)
    x, y = _normalised_test_split()
    expected = (OnnxModel(int8)(x).argmax(1) == y).float().mean().item()
    assert lines[2]["acc1"] == pytest.approx(expected) and lines[2]["images"] == 256
    image = next(folder.rglob("*.png"))
    assert main(["predict", str(image), "--weights", str(int8), "--json"]) == 0
    (onnx_top,) = json.loads(capsys.readouterr().out)
    assert main(["predict", str(image), "--weights", weights, "--json"]) == 0
    (torch_top,) = json.loads(capsys.readouterr().out)
    assert onnx_top["top"][0]["class"] == torch_top["top"][0]["class"] == image.parent.name
    assert main(["predict", str(image), "--weights", str(int8), "--model", "sknet_tiny"]) == 2
    assert "does not apply" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["empty folder", "colour images", "dataset of another size", "no onnxruntime"])
def test_bad_calibration_input_is_one_line_before_any_export_work(exported, tmp_path, capsys, monkeypatch, case):
    weights = exported[0]
    folder = tmp_path / "calibration"
    folder.mkdir()
    calibration = str(folder)
    if case == "colour images":
        (folder / "sub").mkdir()
        Image.fromarray(np.zeros((16, 16, 3), np.uint8), "RGB").save(folder / "sub" / "a.png")
    elif case == "dataset of another size":
        calibration = "fashion_mnist_canvas"  # 56×56 (needs no files to be refused? it does: so fake its data)
        from sknet.data import datasets
        from sknet.data.tensors import InMemoryImages

        fake = InMemoryImages(
            torch.zeros(4, 1, 56, 56, dtype=torch.uint8), torch.zeros(4).long(), ["a"], (0.5,), (0.5,)
        )
        monkeypatch.setattr(datasets, "build_dataset", lambda *a, **k: fake)
    elif case == "no onnxruntime":
        monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)
    import sknet.export

    def no_export(*args, **kwargs):
        raise AssertionError("export work started")

    monkeypatch.setattr(sknet.export, "export_model", no_export)
    out = tmp_path / "m.onnx"
    args = ["export", "--weights", weights, "--format", "onnx", "--quantize", "int8", "--out", str(out)]
    code = main([*args, "--calibration", calibration])
    err = capsys.readouterr().err
    assert code == (2 if case == "no onnxruntime" else 3), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert {"empty folder": "holds no images", "colour images": "has 3 channels", "no onnxruntime": "pip install"}.get(
        case, "56×56"
    ) in err
    assert not out.exists()


@pytest.mark.parametrize(("method", "activations"), [("entropy", "int8"), ("percentile", "uint8")])
def test_calibration_methods_and_activation_types(exported, tmp_path, method, activations):
    from sknet.deploy.calibration import calibration_images
    from sknet.deploy.onnx_model import OnnxModel
    from sknet.deploy.quantize import quantize_export

    model = sknet.create_model(weights=exported[0]).eval()
    images, source = calibration_images(str(exported[3]), sknet.data_config(model), 32)
    assert images.shape == (32, 1, 16, 16) and "32 images" in source
    record = quantize_export(model, tmp_path / "m.onnx", images, source, method, activations=activations)
    assert record["activations"].startswith(activations)
    int8 = OnnxModel(tmp_path / "m.onnx")
    assert int8.precision == "int8" and int8.quantization == record and record["calibration"]["method"] == method
    x, _ = _normalised_test_split()
    with torch.no_grad():
        ref = model(x).argmax(1)
    assert (int8(x).argmax(1) == ref).float().mean() >= 0.99


def test_grouped_path_convolutions_and_the_sk_tail_stay_float(exported):
    # What runs faster or keeps accuracy float (sknet.deploy.quantize: float_convolutions, float_sk_tail):
    # the SK paths' grouped 3×3 convolutions and the attention's convolutions keep float weights, every
    # other convolution int8 weights; the record counts them.
    import onnx

    from sknet.deploy.quantize import float_convolutions, float_sk_tail

    _, fp32, int8, _ = exported
    graph32 = onnx.load(str(fp32)).graph
    grouped, tail = set(float_convolutions(graph32)), set(float_sk_tail(graph32))
    layers = sum(1 for m in sknet.create_model("sknet_tiny").modules() if isinstance(m, sknet.SKConv2d))
    convs32 = {n.name: n for n in graph32.node if n.op_type == "Conv"}
    assert len(grouped) == 2 * layers and len(tail & convs32.keys()) == 2 * layers  # paths; W and A
    graph = onnx.load(str(int8)).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    float_weights = {n.name for n in graph.node if n.op_type == "Conv" and producers.get(n.input[1]) is None}
    int8_weights = {
        n.name for n in graph.node if n.op_type == "Conv" and producers.get(n.input[1]) == "DequantizeLinear"
    }
    assert float_weights == grouped | (tail & convs32.keys())
    assert int8_weights == convs32.keys() - float_weights
    quant = json.loads(onnx.load(str(int8)).metadata_props[-1].value)
    assert quant["float_nodes"] == {"grouped convolutions": len(grouped), "SK tail": len(tail)}


def test_float_convolutions_are_grouped_ones_not_depthwise_or_dense():
    import onnx
    from onnx import TensorProto, helper

    from sknet.deploy.quantize import float_convolutions

    def conv(name, channels_in, groups):
        weight = helper.make_tensor(
            f"{name}.w", TensorProto.FLOAT, (8, channels_in // groups, 3, 3), [0.0] * (8 * channels_in // groups * 9)
        )
        node = helper.make_node("Conv", ["x", f"{name}.w"], [name], name=name, group=groups)
        return node, weight

    nodes, weights = zip(conv("dense", 8, 1), conv("grouped", 8, 2), conv("depthwise", 8, 8), strict=True)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 8, 5, 5))
    outs = [helper.make_tensor_value_info(n.name, TensorProto.FLOAT, (1, 8, 3, 3)) for n in nodes]
    graph = helper.make_graph(list(nodes), "g", [x], outs, initializer=list(weights))
    onnx.checker.check_model(helper.make_model(graph))
    assert float_convolutions(graph) == ["grouped"]


@pytest.mark.parametrize("bits", [7, 8])
def test_weight_codes_stay_within_the_width_asked_for(exported, tmp_path, bits):
    """7-bit weights (the default) keep every u8·s8 pair sum within int16 on x86 CPUs without VNNI; the file's
    int8 weight codes are within ±64, 8-bit ones use ±127, and the record says which."""
    import onnx
    from onnx import numpy_helper

    from sknet.deploy.calibration import calibration_images
    from sknet.deploy.quantize import WEIGHT_CODE_LIMITS, quantize_export
    from sknet.deploy.quantize_torch import weight_observer

    model = sknet.create_model(weights=exported[0]).eval()
    images, source = calibration_images(str(exported[3]), sknet.data_config(model), 32)
    record = quantize_export(model, tmp_path / "m.onnx", images, source, "minmax", weight_bits=bits)
    assert record["weight_bits"] == bits and f"±{WEIGHT_CODE_LIMITS[bits]}" in record["weights"]
    codes = [
        numpy_helper.to_array(t)
        for t in onnx.load(str(tmp_path / "m.onnx")).graph.initializer
        if t.data_type == onnx.TensorProto.INT8
    ]
    assert codes and max(int(np.abs(c.astype(np.int32)).max()) for c in codes) == WEIGHT_CODE_LIMITS[bits]
    observer = weight_observer(bits)()
    weight = torch.randn(8, 4, 3, 3)
    observer(weight)
    scale, zero = observer.calculate_qparams()
    quantized = torch.quantize_per_channel(weight, scale, zero.to(torch.long), 0, torch.qint8).int_repr()
    assert int(quantized.abs().max()) == WEIGHT_CODE_LIMITS[bits]


def test_a_weight_width_not_offered_is_one_line(exported, tmp_path, capsys):
    args = ["export", "--weights", exported[0], "--format", "onnx", "--quantize", "int8"]
    bad = ["--out", str(tmp_path / "m.onnx"), "--calibration", str(exported[3]), "--weight-bits", "6"]
    assert main([*args, *bad]) == 2 and not (tmp_path / "m.onnx").exists()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--weight-bits" in err and "6" in err
