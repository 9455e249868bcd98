"""Every subcommand, given bad input, exits with one line naming the problem, no traceback, and the exit
code of its kind (2 usage or configuration, 3 data, 4 checkpoint or weights file; see sknet.errors)."""

import pytest
import torch

import sknet
from sknet.cli import main
from sknet.weights import save_weights


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    tiny = sknet.create_model("sknet_tiny")
    meta = {"model": "sknet_tiny", "model_options": {}, "num_classes": 10, "in_chans": 1, "dataset": "synthetic"}
    save_weights(root / "tiny.safetensors", tiny, meta)
    (root / "run").mkdir()
    save_weights(root / "run" / "model.safetensors", tiny, meta)
    # Hostile metadata: sizing the input from it would allocate ~24 GB (100000² pixels × 3 × 4 bytes).
    save_weights(root / "absurd.safetensors", tiny, {**meta, "input_size": 100000})
    save_weights(root / "nan.safetensors", tiny, {**meta, "in_chans": 1, "mean": [float("nan")]})
    (root / "bad.png").write_bytes(b"\x89PNG not really")
    (root / "text.safetensors").write_text("hello")
    (root / "empty.caffemodel").write_bytes(b"")
    (root / "junk.caffemodel").write_bytes(b"\xff\xff\xff\xff\x0f")
    torch.save({"w": torch.zeros(2)}, root / "other.pt")
    return root


CASES = [
    # missing paths
    (["eval", "--weights", "{d}/missing.safetensors"], "does not exist", 4),
    (["predict", "{d}/missing.png", "--weights", "{d}/tiny.safetensors"], "missing.png", 3),
    (["attention", "--weights", "{d}/missing.safetensors"], "does not exist", 4),
    (
        ["export", "--weights", "{d}/missing.safetensors", "--format", "onnx", "--out", "{d}/x.onnx"],
        "does not exist",
        4,
    ),
    (["convert", "--from", "caffe", "{d}/missing.caffemodel", "--out", "{d}/x.safetensors"], "missing.caffemodel", 4),
    # a folder where a file is named: said so (a run folder: its weights file named), not "does not exist"
    (["eval", "--weights", "{d}/run"], "is a folder, not a file: give {d}/run/model.safetensors", 4),
    (["export", "--weights", "{d}", "--format", "onnx", "--out", "{d}/x.onnx"], "is a folder, not a file", 4),
    (["predict", "{d}/run", "--weights", "{d}/tiny.safetensors"], "image {d}/run is a folder, not an image file", 3),
    # an output folder that does not exist: storage (the README's table), before any work
    (["export", "--model", "sknet_tiny", "--format", "onnx", "--out", "{d}/nodir/x.onnx"], "folder", 6),
    (["convert", "--from", "caffe", "{d}/empty.caffemodel", "--out", "{d}/nodir/x.safetensors"], "nodir", 6),
    (["train", "--config", "{d}/missing.yaml"], "missing.yaml"),
    (["train", "--resume", "{d}/missing.pt", "--dataset", "synthetic", "--output", "{d}/o"], "does not exist", 4),
    # wrong types and values
    (["train", "--epochs", "x"], "invalid int value: 'x'"),
    (["train", "--epochs", "0", "--dataset", "synthetic", "--output", "{d}/o"], "epochs"),
    (["train", "--lr", "-1", "--dataset", "synthetic", "--output", "{d}/o"], "lr"),
    (["eval", "--weights", "{d}/tiny.safetensors", "--batch-size", "0"], "batch"),
    (["eval", "--weights", "{d}/tiny.safetensors", "--resolution", "0"], "--resolution: must be an integer in [8"),
    (["eval", "--weights", "{d}/tiny.safetensors", "--workers", "-1"], "--workers: must be an integer in [0, 256]"),
    (["train", "--dataset", "synthetic", "--grad-clip", "-1"], "--grad-clip: must be a finite number > 0"),
    (["train", "--dataset", "synthetic", "--seed", "1.5"], "invalid int value: '1.5'"),
    (["attention", "--weights", "{d}/tiny.safetensors", "--scales", "two"], "invalid float value"),
    (["profile", "sknet50", "--resolution", "-3"], "resolution"),
    (["profile", "sknet50", "--resolution", "0"], "resolution"),
    (["bench", "--batch-size", "0"], "batch"),
    (["export", "--model", "sknet_tiny", "--format", "onnx", "--resolution", "0", "--out", "{d}/x.onnx"], "resolution"),
    (["predict", "{d}/bad.png", "--weights", "{d}/tiny.safetensors", "--topk", "0"], "topk"),
    # unknown models
    (["profile", "sknet5O"], "unknown model"),
    (["train", "--model", "resnet50", "--dataset", "synthetic", "--output", "{d}/o"], "unknown model"),
    (["export", "--model", "sknet51", "--format", "torchscript", "--out", "{d}/x.pt"], "unknown model"),
    (["convert", "--from", "timm", "resnet50", "--out", "{d}/x.safetensors"], "no sknet model matches"),
    # incompatible weights
    (["eval", "--weights", "{d}/tiny.safetensors", "--model", "resnext_tiny"], "holds weights of model", 4),
    (["predict", "{d}/bad.png", "--weights", "{d}/tiny.safetensors", "--model", "sknet50"], "holds weights", 4),
    (["eval", "--weights", "{d}/other.pt", "--model", "sknet_tiny", "--dataset", "synthetic"], "other.pt", 4),
    (["eval", "--weights", "{d}/text.safetensors"], "safetensors", 4),
    # an image given as the weights (e.g. predict's image and --weights swapped): named as an image
    (["predict", "{d}/tiny.safetensors", "--weights", "{d}/bad.png"], "bad.png is an image (PNG), not a", 4),
    (["convert", "--from", "caffe", "{d}/empty.caffemodel", "--out", "{d}/x.safetensors"], "caffemodel", 4),
    (["convert", "--from", "caffe", "{d}/junk.caffemodel", "--out", "{d}/x.safetensors"], "caffemodel", 4),
    # hostile metadata, refused before anything is sized from it
    (["predict", "{d}/bad.png", "--weights", "{d}/absurd.safetensors"], "input_size=100000 is out of range", 4),
    (["eval", "--weights", "{d}/absurd.safetensors"], "input_size=100000 is out of range", 4),
    (["export", "--weights", "{d}/nan.safetensors", "--format", "pt2", "--out", "{d}/x.pt2"], "finite numbers", 4),
    # unreadable images
    (["predict", "{d}/bad.png", "--weights", "{d}/tiny.safetensors"], "cannot read image", 3),
    # unknown subcommands and options
    (["fly"], "invalid choice: 'fly'"),
    (["eval"], "required: --weights"),
    (["profile", "--table", "imagenet", "sknet50"], "either model names or --table"),
]


@pytest.mark.parametrize("case", CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_bad_input_exits_with_one_line_and_its_code(files, capsys, case):
    argv, message, *code = case
    argv = [a.format(d=files) for a in argv]
    assert main(argv) == (code[0] if code else 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert message.format(d=files) in err, err


def test_absurd_metadata_fails_fast(files, capsys):
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    assert main(["predict", str(files / "bad.png"), "--weights", str(files / "absurd.safetensors")]) == 4
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert grown < 1 << 20, f"{grown} KiB"  # refused from the header: nothing of the ~24 GB was allocated
    assert "out of range" in capsys.readouterr().err


def test_predict_checks_every_image_before_loading_the_model(files, capsys, monkeypatch):
    """A missing image at the end of the list is named before the weights are loaded and any image is
    classified: no work done and thrown away, no partial output."""
    import sknet.cli.predict_cmd as predict_cmd

    def load_model(*args):
        raise AssertionError("the model was loaded before the images were checked")

    monkeypatch.setattr(predict_cmd, "load_model", load_model)
    argv = ["predict", str(files / "bad.png"), str(files / "missing.png"), "--weights", str(files / "tiny.safetensors")]
    assert main(argv) == 3
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "missing.png does not exist" in err, err


def test_a_batch_larger_than_memory_is_one_line_not_torchs_traceback(capsys):
    """torch's CPU allocator refuses ~600 GB (batch 1,000,000 × 3 × 224²) with a RuntimeError whose text
    spans lines: one line saying so, exit 2 (a value too large for this machine), no traceback."""
    argv = ["bench", "--no-timm", "--mode", "inference", "--batch-size", "1000000", "--repeats", "1"]
    assert main([*argv, "--warmup", "0", "--formats", "nchw"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert "out of memory: 602.1 GB could not be allocated" in err and "--batch-size" in err, err


def test_cuda_out_of_memory_is_one_line(capsys, monkeypatch):
    import sknet.cli.predict_cmd as predict_cmd

    def load_model(*args):
        raise torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.1 GiB of which\n..."
        )

    monkeypatch.setattr(predict_cmd, "load_model", load_model)
    monkeypatch.setattr(predict_cmd, "check_images", lambda paths: None)
    assert main(["predict", "x.png", "--weights", "w.safetensors"]) == 2
    err = capsys.readouterr().err
    assert err == "sknet predict: error: out of memory: 2.00 GiB could not be allocated\n", err
