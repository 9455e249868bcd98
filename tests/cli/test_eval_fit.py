"""`sknet eval` prepares decoded images as the model's record says, channels included (as `sknet predict`
does), whatever the model's file: weights, ONNX or TorchScript; and a data set whose classes or channels do
not fit the model is one line, exit 3, before the data is read."""

import json

import pytest
from PIL import Image

from sknet.cli import main
from sknet.weights import save_weights
from tests.train.helpers import tiny_run


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A one-channel 4-class run, its TorchScript export (and ONNX where installed), an RGB image folder."""
    root = tmp_path_factory.mktemp("fit")
    assert main(tiny_run(root / "run")) == 0
    weights = root / "run" / "model.safetensors"
    exports = [weights]
    for fmt, name in (("torchscript", "m.pt"), ("onnx", "m.onnx")):
        if fmt == "onnx" and not _has("onnxruntime", "onnxscript"):  # an optional extra
            continue
        assert main(["export", "--weights", str(weights), "--format", fmt, "--out", str(root / name)]) == 0
        exports.append(root / name)
    for k in range(4):
        folder = root / "rgb" / "val" / f"c{k}"
        folder.mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), (60 * k, 30 * i, 200 - 40 * k)).save(folder / f"{i}.png")
    return exports, root / "rgb"


def _has(*modules):
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


def test_a_one_channel_model_of_any_format_evaluates_an_rgb_folder(files, capsys):
    """Was: the exported ONNX / TorchScript file raised ONNX Runtime's / PyTorch's error, exit 1."""
    exports, folder = files
    capsys.readouterr()
    results = []
    for path in exports:
        argv = ["eval", "--weights", str(path), "--dataset", "imagefolder", "--data-dir", str(folder), "--json"]
        assert main([*argv, "--workers", "0", "--progress", "never", "--device", "cpu"]) == 0, capsys.readouterr().err
        (result,) = json.loads(capsys.readouterr().out)
        results.append((result["images"], result["acc1"]))
    assert results == [results[0]] * len(exports) and results[0][0] == 12


def test_classes_or_channels_that_do_not_fit_are_refused_before_the_data_is_read(files, tmp_path, capsys, monkeypatch):
    import sknet.data.pipeline

    monkeypatch.setattr(sknet.data.pipeline, "build_loader", lambda *a, **k: pytest.fail("the data was read"))
    exports, _ = files
    for path in exports:  # 4 classes; Fashion-MNIST has 10 (and need not be installed: nothing is read)
        assert main(["eval", "--weights", str(path), "--dataset", "fashion_mnist", "--data-dir", str(tmp_path)]) == 3
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is a 4-class model but fashion_mnist has 10 classes" in err, err
    colour = tmp_path / "rgb.safetensors"
    meta = {"model": "sknet_tiny", "model_options": {}, "num_classes": 4, "in_chans": 3, "dataset": "synthetic"}
    save_weights(colour, sknet.create_model("sknet_tiny", num_classes=4, in_chans=3), meta)
    assert main(["eval", "--weights", str(colour)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "takes 3-channel images but synthetic has 1-channel images" in err, err
