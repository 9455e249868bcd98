"""Every command that writes files refuses to write over a file it reads (whatever the flags), among the data
it reads, over a training run's files, and, without --overwrite, over an output that exists: one line, exit
2, before any work, the files untouched (sknet.cli.outputs)."""

import os

import pytest
from PIL import Image

from sknet.cli import main
from tests.train.helpers import tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs") / "run"
    assert main(tiny_run(out)) == 0
    return out


def _folder(root, splits=("train", "val")):
    for split in splits:
        for k in range(2):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(2):
                Image.new("RGB", (12, 12), (60 * k, 20 * i, 0)).save(folder / f"{i}.png")
    return root


def _refused(argv, message, capsys, *kept):
    """`argv` exits 2 with one line holding `message`, and every file of `kept` keeps its bytes."""
    before = [p.read_bytes() for p in kept]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert [p.read_bytes() for p in kept] == before


def test_export_never_writes_over_the_weights_it_reads(run, tmp_path, capsys):
    """Was: `sknet export --weights w.safetensors --format onnx --out w.safetensors` replaced the weights."""
    weights = tmp_path / "w.safetensors"
    weights.write_bytes((run / "model.safetensors").read_bytes())
    (tmp_path / "link.safetensors").symlink_to(weights)
    os.link(weights, tmp_path / "hard.safetensors")
    for out in (weights, tmp_path / "link.safetensors", tmp_path / "hard.safetensors"):
        argv = ["export", "--weights", weights, "--format", "onnx", "--out", out, "--overwrite"]
        _refused(argv, "which this command reads", capsys, weights)


@pytest.mark.parametrize("name", ["model.safetensors", "checkpoint.pt", "checkpoint.pt.sha256", "config.yaml"])
def test_no_command_writes_over_a_runs_files(run, tmp_path, capsys, name):
    out = run / name
    export = ["export", "--model", "sknet_tiny", "--format", "pt2", "--out", out, "--overwrite"]
    _refused(export, "is a file of the training run", capsys, out)
    convert = ["convert", "--from", "caffe", tmp_path / "x.caffemodel", "--out", run / "model.safetensors"]
    _refused([*convert, "--overwrite"], "is a file of the training run", capsys, run / "model.safetensors")


def test_an_existing_output_needs_overwrite(run, tmp_path, capsys):
    out = tmp_path / "m.pt2"
    out.write_bytes(b"mine")
    argv = ["export", "--weights", run / "model.safetensors", "--format", "pt2", "--out", out]
    _refused(argv, f"--out: {out} exists already; pass --overwrite", capsys, out)
    assert main([str(a) for a in argv] + ["--overwrite"]) == 0
    assert out.read_bytes() != b"mine"
    # ONNX also writes (or removes a stale) OUT.data beside the file: that is an output too.
    stale = tmp_path / "m.onnx.data"
    stale.write_bytes(b"mine")
    onnx = ["export", "--weights", run / "model.safetensors", "--format", "onnx", "--out", tmp_path / "m.onnx"]
    _refused(onnx, "m.onnx.data exists already", capsys, stale)


def test_convert_never_writes_over_its_input(tmp_path, capsys):
    checkpoint = tmp_path / "timm.safetensors"
    checkpoint.write_bytes(b"downloaded")
    argv = ["convert", "--from", "timm", "skresnext50_32x4d", "--checkpoint", checkpoint, "--out", checkpoint]
    _refused([*argv, "--overwrite"], "which this command reads", capsys, checkpoint)
    caffe = tmp_path / "m.caffemodel"
    caffe.write_bytes(b"caffe")
    prototxt = tmp_path / "m.safetensors"
    prototxt.write_bytes(b"proto")
    argv = ["convert", "--from", "caffe", caffe, "--prototxt", prototxt, "--out", prototxt, "--overwrite"]
    _refused(argv, "which this command reads", capsys, caffe, prototxt)


def test_attention_refuses_an_earlier_study_and_its_own_data(run, tmp_path, capsys):
    out = tmp_path / "att"
    argv = ["attention", "--weights", run / "model.safetensors", "--output", out, "--max-images", "8"]
    argv += ["--progress", "never"]
    assert main([str(a) for a in argv]) == 0
    capsys.readouterr()
    _refused(argv, "attention.json, ", capsys, out / "attention.json", out / "figure3.png")
    assert main([str(a) for a in argv] + ["--overwrite"]) == 0
    capsys.readouterr()
    data = _folder(tmp_path / "data")
    inside = ["attention", "--weights", run / "model.safetensors", "--dataset", "imagefolder", "--data-dir", data]
    _refused([*inside, "--output", data / "val" / "c0"], "the data this command reads", capsys)


def test_shards_refuse_earlier_shards_and_writing_among_their_images(tmp_path, capsys):
    pytest.importorskip("webdataset")
    data = _folder(tmp_path / "data")
    out = tmp_path / "shards"
    assert main(["shards", str(data), str(out)]) == 0
    capsys.readouterr()
    _refused(["shards", data, out], "info.json, ", capsys, out / "info.json", out / "train-000000.tar")
    assert main(["shards", str(data), str(out), "--overwrite", "--seed", "1"]) == 0
    capsys.readouterr()
    _refused(["shards", data, data / "train" / "c0"], "the data this command reads", capsys)
    # Without val/, shards next to the images (DIR/shards) read nothing there: allowed.
    alone = _folder(tmp_path / "alone", splits=("train",))
    assert main(["shards", str(alone), str(alone / "shards")]) == 0


def test_train_refuses_a_run_among_its_data_and_moving_its_own_init_weights(run, tmp_path, capsys):
    data = _folder(tmp_path / "data")
    argv = ["train", "--dataset", "imagefolder", "--data-dir", data, "--output", data / "train" / "run"]
    _refused(argv, "the data this run reads", capsys)
    assert not (data / "train" / "run").exists()
    copy = tmp_path / "copy"
    assert main(tiny_run(copy)) == 0
    capsys.readouterr()
    argv = tiny_run(copy, "--init-weights", str(copy / "model.safetensors"), "--overwrite")
    _refused(argv, "which --overwrite moves aside", capsys, copy / "model.safetensors")
    assert not list(tmp_path.glob("copy.replaced-*"))
