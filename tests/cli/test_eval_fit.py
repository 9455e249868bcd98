"""`sknet eval` and `sknet predict` run a model of any file sknet writes: weights, ONNX, TorchScript, pt2.
Eval prepares decoded images as the model's record says, channels included (as predict does); a data set
whose classes or channels do not fit the model is one line, exit 3, before the data is read; an exported
file runs at the size it was exported for."""

import json

import pytest
from PIL import Image

from sknet.cli import main
from sknet.weights import save_weights
from tests.train.helpers import tiny_run


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A one-channel 4-class run, its TorchScript and torch.export exports (and ONNX where installed), an RGB
    image folder."""
    root = tmp_path_factory.mktemp("fit")
    assert main(tiny_run(root / "run")) == 0
    weights = root / "run" / "model.safetensors"
    exports = [weights]
    for fmt, name in (("torchscript", "m.pt"), ("pt2", "m.pt2"), ("onnx", "m.onnx")):
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
    import sknet.data.loader

    monkeypatch.setattr(sknet.data.loader, "build_loader", lambda *a, **k: pytest.fail("the data was read"))
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


def test_predict_and_eval_run_their_own_pt2_export(files, tmp_path, capsys):
    """Was: `sknet predict --weights FILE.pt2` said the file was "corrupt or truncated"."""
    exports, _ = files
    image = tmp_path / "x.png"
    Image.new("L", (20, 20), 90).save(image)
    capsys.readouterr()
    printed = []
    for path in (exports[0], exports[0].parents[1] / "m.pt2"):
        assert main(["predict", str(image), "--weights", str(path), "--json"]) == 0
        printed.append(json.loads(capsys.readouterr().out)[0]["top"])
    assert [t["class"] for t in printed[0]] == [t["class"] for t in printed[1]]
    assert [t["probability"] for t in printed[1]] == pytest.approx([t["probability"] for t in printed[0]], abs=1e-5)
    results = []
    for path in (exports[0], exports[0].parents[1] / "m.pt2"):
        assert main(["eval", "--weights", str(path), "--json", "--progress", "never", "--device", "cpu"]) == 0
        results.append(json.loads(capsys.readouterr().out)[0]["acc1"])
    assert results[0] == results[1]


def test_an_export_runs_at_its_own_size_only(files, tmp_path, capsys):
    """Was: ONNX Runtime's "Got: 32 Expected: 16" traceback for eval --resolution 32 of a 16-pixel export."""
    exports, folder = files
    fixed = [p for p in exports if p.suffix in (".onnx", ".pt2")]
    for path in fixed:
        argv = ["eval", "--weights", str(path), "--dataset", "imagefolder", "--data-dir", str(folder)]
        assert main([*argv, "--resolution", "32", "--workers", "0"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "runs at 16×16 (its export's size)" in err, err
    weights = exports[0]
    wide = tmp_path / "m32.pt2"
    assert main(["export", "--weights", str(weights), "--format", "pt2", "--resolution", "32", "--out", str(wide)]) == 0
    capsys.readouterr()
    assert main(["eval", "--weights", str(wide), "--device", "cpu"]) == 3  # synthetic images are 16×16 tensors
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exported for 32×32 images but synthetic holds 16×16 images" in err, err


@pytest.mark.parametrize("command", ["attention", "export"])
def test_an_export_given_where_weights_are_read_is_named_for_what_it_is(files, tmp_path, capsys, command):
    exports, _ = files
    out = ["--format", "pt2", "--out", str(tmp_path / "x.pt2")] if command == "export" else []
    kinds = {".pt": "a TorchScript module", ".pt2": "a torch.export program", ".onnx": "an ONNX model"}
    for path in exports[1:]:
        assert main([command, "--weights", str(path), *out]) == 4
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"is {kinds[path.suffix]} (an export" in err, err


def test_resume_of_weights_says_what_resume_takes(files, capsys):
    """Was: "model.safetensors is corrupt or truncated (not a torch checkpoint)"."""
    weights = files[0][0]
    assert main(["train", "--resume", str(weights)]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"start a new run from them with --init-weights {weights}" in err, err


def test_resolutions_of_data_held_as_tensors_are_refused_not_ignored(files, capsys):
    """Data sets held as tensors have one size: several --resolution values, or one they do not hold, were
    evaluated at the stored size alone, silently."""
    weights = str(files[0][0])
    assert main(["eval", "--weights", weights, "--device", "cpu", "--resolution", "16", "20"]) == 2
    assert "synthetic is held as tensors of one size" in capsys.readouterr().err
    assert main(["eval", "--weights", weights, "--device", "cpu", "--resolution", "20"]) == 2
    assert "synthetic holds 16×16 images: --resolution 20 cannot apply" in capsys.readouterr().err
    assert main(["eval", "--weights", weights, "--device", "cpu", "--resolution", "16"]) == 0
    assert "@ 16:" in capsys.readouterr().out
