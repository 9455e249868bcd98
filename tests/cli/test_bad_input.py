"""Every subcommand, given bad input, exits 2 with one line naming the problem and no traceback."""

import pytest
import torch

import sknet
from sknet.cli import main
from sknet.train.checkpoint import save_weights


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    tiny = sknet.create_model("sknet_tiny")
    meta = {"model": "sknet_tiny", "model_options": {}, "num_classes": 10, "in_chans": 1, "dataset": "synthetic"}
    save_weights(root / "tiny.safetensors", tiny, meta)
    (root / "bad.png").write_bytes(b"\x89PNG not really")
    (root / "text.safetensors").write_text("hello")
    (root / "empty.caffemodel").write_bytes(b"")
    (root / "junk.caffemodel").write_bytes(b"\xff\xff\xff\xff\x0f")
    torch.save({"w": torch.zeros(2)}, root / "other.pt")
    return root


CASES = [
    # missing paths
    (["eval", "--weights", "{d}/missing.safetensors"], "does not exist"),
    (["predict", "{d}/missing.png", "--weights", "{d}/tiny.safetensors"], "missing.png"),
    (["attention", "--weights", "{d}/missing.safetensors"], "does not exist"),
    (["export", "--weights", "{d}/missing.safetensors", "--format", "onnx", "--out", "{d}/x.onnx"], "does not exist"),
    (["convert", "--from", "caffe", "{d}/missing.caffemodel", "--out", "{d}/x.safetensors"], "missing.caffemodel"),
    (["train", "--config", "{d}/missing.yaml"], "missing.yaml"),
    (["train", "--resume", "{d}/missing.pt", "--dataset", "synthetic", "--output", "{d}/o"], "does not exist"),
    # wrong types and values
    (["train", "--epochs", "x"], "invalid int value: 'x'"),
    (["train", "--epochs", "0", "--dataset", "synthetic", "--output", "{d}/o"], "epochs"),
    (["train", "--lr", "-1", "--dataset", "synthetic", "--output", "{d}/o"], "lr"),
    (["eval", "--weights", "{d}/tiny.safetensors", "--batch-size", "0"], "batch"),
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
    (["eval", "--weights", "{d}/tiny.safetensors", "--model", "resnext_tiny"], "holds weights of model"),
    (["predict", "{d}/bad.png", "--weights", "{d}/tiny.safetensors", "--model", "sknet50"], "holds weights"),
    (["eval", "--weights", "{d}/other.pt", "--model", "sknet_tiny", "--dataset", "synthetic"], "other.pt"),
    (["eval", "--weights", "{d}/text.safetensors"], "safetensors"),
    (["convert", "--from", "caffe", "{d}/empty.caffemodel", "--out", "{d}/x.safetensors"], "caffemodel"),
    (["convert", "--from", "caffe", "{d}/junk.caffemodel", "--out", "{d}/x.safetensors"], "caffemodel"),
    # unreadable images
    (["predict", "{d}/bad.png", "--weights", "{d}/tiny.safetensors"], "cannot read image"),
    # unknown subcommands and options
    (["fly"], "invalid choice: 'fly'"),
    (["eval"], "required: --weights"),
    (["profile", "--table", "imagenet", "sknet50"], "either model names or --table"),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_bad_input_exits_2_with_one_line(files, capsys, argv, message):
    argv = [a.format(d=files) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert message in err, err
