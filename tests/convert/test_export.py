import json

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
    written = export_model(model, tmp_path / "m.onnx", "onnx", (1, 28, 28))
    assert written == [tmp_path / "m.onnx"] and not (tmp_path / "m.onnx.data").exists()  # one file
    alone = tmp_path / "elsewhere" / "copy.onnx"  # copied alone to another folder, it still runs
    alone.parent.mkdir()
    alone.write_bytes(written[0].read_bytes())
    written[0].unlink()
    path = alone
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    record = sknet.data_config(model)
    assert json.loads(props["mean"]) == list(record.mean) and json.loads(props["std"]) == list(record.std)
    assert json.loads(props["input_size"]) == 28 and json.loads(props["model"]) == "sknet_tiny"
    assert json.loads(props["sknet"])["crop_fraction"] == 1.0
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
    (path,) = export_model(model, tmp_path / "m.pt2", "pt2", (1, 28, 28))
    extra = {"sknet.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    assert json.loads(extra["sknet.json"])["in_chans"] == 1
    assert not any("batch_norm" in str(node.target) for node in program.graph.nodes)  # the fused graph
    loaded = program.module()
    for batch in (1, 5):
        x = torch.randn(batch, 1, 28, 28)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="size"):  # the program guards its input's channels
        loaded(torch.randn(2, 3, 28, 28))


def test_torchscript_export(model, tmp_path):
    (path,) = export_model(model, tmp_path / "m.pt", "torchscript", (1, 28, 28))
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
    assert (
        main(["export", "--model", "sknet_tiny", "--format", "onnx", "--out", str(tmp_path / "no/a.onnx")]) == 6
    )  # storage (README)


def test_weights_carry_their_data_config_and_predict_uses_it(tmp_path, capsys):
    """A trained model's weights record its preprocessing; sknet.transforms(model) is what predict applies."""
    from PIL import Image

    from sknet.predict import predict
    from sknet.train.trainer import Trainer
    from tests.train.helpers import tiny_config

    Trainer(tiny_config(tmp_path / "run", epochs=1)).fit()
    model = sknet.create_model(weights=tmp_path / "run" / "model.safetensors")  # the name is recorded
    record = sknet.data_config(model)
    assert record.input_size == 16 and record.in_chans == 1 and record.classes == tuple(f"class{i}" for i in range(4))
    assert record.mean == (0.5,) and record.std == (0.25,) and record.channel_order == "L"
    image = tmp_path / "x.png"
    Image.fromarray((np.arange(24 * 20) % 251).astype(np.uint8).reshape(20, 24)).save(image)
    with torch.no_grad():
        x = sknet.transforms(model)(Image.open(image).convert("L"))[None]
        expected = model.eval()(x).softmax(1)[0]
    (result,) = predict(model, [image], topk=4)
    by_class = {t["class"]: t["probability"] for t in result["top"]}
    assert by_class == pytest.approx({f"class{i}": float(p) for i, p in enumerate(expected)}, rel=1e-6)
    capsys.readouterr()
    assert main(["predict", str(image), "--weights", str(tmp_path / "run" / "model.safetensors"), "--json"]) == 0
    (printed,) = json.loads(capsys.readouterr().out)
    assert {t["class"]: t["probability"] for t in printed["top"]} == pytest.approx(by_class, rel=1e-6)
    # Exported, the file alone (copied elsewhere) says how to feed it and names the classes.
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    weights = str(tmp_path / "run" / "model.safetensors")
    assert main(["export", "--weights", weights, "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert f"wrote {tmp_path / 'm.onnx'} (onnx" in capsys.readouterr().out and not (tmp_path / "m.onnx.data").exists()
    alone = tmp_path / "copied" / "m.onnx"
    alone.parent.mkdir()
    (tmp_path / "m.onnx").rename(alone)
    session = ort.InferenceSession(str(alone), providers=["CPUExecutionProvider"])
    props = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    assert props["classes"] == [f"class{i}" for i in range(4)] and props["mean"] == [0.5] and props["std"] == [0.25]
    logits = session.run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(torch.from_numpy(logits).softmax(1)[0].numpy(), expected.numpy(), atol=1e-5)


def _graph_input_side(fmt: str, path) -> tuple[int, int]:
    """(recorded input_size, the graph's input side) of an exported file."""
    if fmt == "onnx":
        import onnx

        graph = onnx.load(str(path))
        dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
        props = {p.key: p.value for p in graph.metadata_props}
        assert dims[2] == dims[3]
        return json.loads(props["input_size"]), dims[2]
    extra = {"sknet.json": ""}
    if fmt == "pt2":
        program = torch.export.load(str(path), extra_files=extra)
        names = program.graph_signature.user_inputs
        (shape,) = [n.meta["val"].shape for n in program.graph.nodes if n.op == "placeholder" and n.name in names]
        return json.loads(extra["sknet.json"])["input_size"], int(shape[2])
    loaded = torch.jit.load(str(path), _extra_files=extra)  # a trace keeps no input shape: run the recorded one
    side = json.loads(extra["sknet.json"])["input_size"]
    assert loaded(torch.randn(1, 1, side, side)).shape == (1, 10)
    return side, 48


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "torchscript"])
def test_every_format_records_the_size_it_traced(tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
    out = tmp_path / f"m.{fmt}"
    assert main(["export", "--model", "sknet_tiny", "--format", fmt, "--resolution", "48", "--out", str(out)]) == 0
    recorded, graph = _graph_input_side(fmt, out)
    assert recorded == graph == 48  # the record says 28 (the training size) unless the export rewrites it


def test_export_refuses_a_size_the_record_cannot_describe(model, tmp_path):
    with pytest.raises(sknet.ConfigError, match="must be square"):
        export_model(model, tmp_path / "m.pt2", "pt2", (1, 28, 32))
    with pytest.raises(sknet.ConfigError, match="3 channels; the model's input record has 1"):
        export_model(model, tmp_path / "m.pt2", "pt2", (3, 28, 28))


def test_an_opset_the_exporter_does_not_write_is_refused_before_any_work(tmp_path, capsys):
    """torch.onnx wrote opset 18 without a word when asked for 17 or for one newer than onnx knows."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    newest = onnx.defs.onnx_opset_version()
    for opset, message in ((17, "--opset: must be an integer ≥ 18"), (newest + 1, f"out of range: 18–{newest}")):
        out = tmp_path / f"m{opset}.onnx"
        argv = ["export", "--model", "sknet_tiny", "--format", "onnx", "--opset", str(opset), "--out", str(out)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and not out.exists(), err
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", "sknet_tiny", "--format", "onnx", "--opset", str(newest), "--out", str(out)]) == 0
    assert [o.version for o in onnx.load(str(out)).opset_import if o.domain == ""] == [newest]
