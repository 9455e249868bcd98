import json

import pytest
from PIL import Image

from sknet.cli import main
from sknet.data.datasets import Split, make_synthetic

TRAIN = [
    "train",
    "--model",
    "sknet_tiny",
    "--dataset",
    "synthetic",
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--progress",
    "never",
    "--threads",
    "1",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main([*TRAIN, "--output", str(out)]) == 0
    return out


def test_train_then_eval_reports_the_same_accuracy(trained, capsys):
    summary = json.loads((trained / "summary.json").read_text())
    capsys.readouterr()
    assert main(["eval", "--weights", str(trained / "model.safetensors"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["model"] == "sknet_tiny" and result["dataset"] == "synthetic"
    assert result["acc1"] == pytest.approx(summary["val_acc1"]) and result["images"] == 256
    assert main(["eval", "--weights", str(trained / "checkpoint.pt")]) == 0
    assert "top-1 error" in capsys.readouterr().out


def test_predict_images(trained, tmp_path, capsys):
    data = make_synthetic(Split.TEST)
    paths = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(data.images[i, 0].numpy()).save(path)
        paths.append(str(path))
    capsys.readouterr()
    assert main(["predict", *paths, "--weights", str(trained / "model.safetensors"), "--topk", "2", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == paths
    top = results[0]["top"]
    assert len(top) == 2 and top[0]["class"].startswith("class") and top[0]["probability"] >= top[1]["probability"]


@pytest.mark.parametrize(
    "case",
    [
        (
            ["train", "--dataset", "fashion_mnist", "--data-dir", "{tmp}", "--output", "{tmp}/o"],
            "apt-get install dataset-fashion-mnist",
            3,
        ),
        (
            ["train", "--dataset", "imagefolder", "--data-dir", "{tmp}/none", "--output", "{tmp}/o"],
            "does not exist",
            3,
        ),
        # (the run beside the data: inside a folder of classes it would be a class of its own, refused)
        (["train", "--dataset", "imagefolder", "--data-dir", "{tmp}", "--output", "{tmp}-o"], "no images in", 3),
        (["train", "--model", "sknet_tinyy"], "did you mean sknet_tiny"),
        # Checked before the data: a typo is named even where the data set is missing.
        (["train", "--model", "sknet_tinyy", "--dataset", "fashion_mnist", "--data-dir", "{tmp}"], "did you mean"),
        (["train", "--dataset", "fashion_mnistt", "--data-dir", "{tmp}"], "unknown dataset 'fashion_mnistt'"),
        ([*TRAIN, "--set", "colour=2", "--output", "{tmp}/o"], "model 'sknet_tiny' has no option 'colour'"),
        (["train", "--config", "{tmp}/missing.yaml"], "config file"),
        ([*TRAIN, "--sync-bn", "--output", "{tmp}/o"], "sync_bn needs CUDA"),
        ([*TRAIN, "--precision", "fp16", "--output", "{tmp}/o"], "fp16 needs a CUDA device"),
        ([*TRAIN, "--compile-mode", "reduce-overhead", "--output", "{tmp}/o"], "needs compile: add --compile"),
        ([*TRAIN, "--compile-mode", "fastest", "--output", "{tmp}/o"], "invalid choice: 'fastest'"),
        (["train", "--resume", "{tmp}/nope.pt", *TRAIN[1:], "--output", "{tmp}/o"], "does not exist", 4),
        (["eval", "--weights", "{tmp}/nope.safetensors"], "does not exist", 4),
        (["predict", "{tmp}/nope.png", "--weights", "{run}/model.safetensors"], "does not exist", 3),
        (["predict", "{tmp}/bad.png", "--weights", "{run}/model.safetensors"], "cannot read image", 3),
        (["eval", "--weights", "{tmp}/bad.png"], "is an image (PNG), not a checkpoint", 4),
        (["eval", "--weights", "{tmp}/fake.safetensors"], "not a valid safetensors file", 4),
    ],
)
def test_bad_input_is_one_clear_line(trained, tmp_path, capsys, case):
    argv, message, *code = case  # exit code: 2 usage or configuration, 3 data, 4 checkpoint or weights
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    (tmp_path / "fake.safetensors").write_bytes(b"\x00" * 20)
    argv = [a.format(tmp=tmp_path, run=trained) for a in argv]
    assert main(argv) == (code[0] if code else 2)
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_imagefolder_training_counts_unreadable_images(tmp_path, capsys):
    for split in ("train", "val"):
        for c, colour in (("red", (200, 0, 0)), ("blue", (0, 0, 200))):
            folder = tmp_path / "data" / split / c
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (48, 40), tuple(min(255, v + 10 * i) for v in colour)).save(folder / f"{i}.png")
    (tmp_path / "data" / "train" / "red" / "broken.jpg").write_bytes(b"truncated")
    argv = [
        "train",
        "--model",
        "resnext_tiny",
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(tmp_path / "data"),
        "--image-size",
        "32",
        "--workers",
        "0",
        "--batch-size",
        "3",
        "--epochs",
        "1",
        "--progress",
        "never",
        "--output",
        str(tmp_path / "run"),
    ]
    with pytest.warns(UserWarning, match="broken.jpg"):
        assert main(argv) == 0
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert row["skipped_images"] == 1 and row["val_images"] == 8
    # The paper's protocol at two crop sizes (shorter side to size/0.875, centre crop).
    capsys.readouterr()
    weights = str(tmp_path / "run" / "model.safetensors")
    evaluate = ["eval", "--weights", weights, "--data-dir", str(tmp_path / "data"), "--workers", "0", "--json"]
    assert main([*evaluate, "--resolution", "32", "40"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["resolution"] for r in results] == [32, 40] and all(r["images"] == 8 for r in results)
    assert results[0]["acc1"] == pytest.approx(row["val_acc1"])
    capsys.readouterr()
    assert main([*argv, "--bad-images", "raise", "--output", str(tmp_path / "run2")]) == 3  # a data error
    err = capsys.readouterr().err
    assert "unreadable image" in err and "broken.jpg" in err
    # The 2-class model on a 3-class folder: one line, a data error (not an IndexError from the loss).
    for split in ("train", "val"):
        (tmp_path / "data" / split / "green").mkdir()
        Image.new("RGB", (48, 40), (0, 200, 0)).save(tmp_path / "data" / split / "green" / "0.png")
    assert main([*evaluate]) == 3
    assert "is a 2-class model but imagefolder has 3 classes" in capsys.readouterr().err
