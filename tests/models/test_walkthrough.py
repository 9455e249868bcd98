"""The fine-tuning walk-through of docs/training.md, run as written (a tiny synthetic run stands in for Fashion-MNIST),
and `sknet train --init-weights` from the command line."""

import re
from pathlib import Path

import pytest
import torch

import sknet
from sknet.cli import main
from sknet.data.datasets import Split, make_synthetic
from sknet.weights import read_metadata, save_weights
from tests.train.helpers import tiny_run


def readme_block() -> str:
    readme = (Path(__file__).parents[2] / "docs" / "training.md").read_text()
    after = readme.split("<!-- fine-tuning walk-through:", 1)[1]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


def test_readme_fine_tuning_walkthrough_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(tiny_run("runs/fashion_mnist")) == 0  # the source run (4 classes here)
    data = {}
    for split, prefix in ((Split.TRAIN, "train"), (Split.TEST, "test")):
        images = make_synthetic(split, num_classes=5, size=28, count=64)
        data[f"{prefix}_images"], data[f"{prefix}_labels"] = images.images, images.labels
    with pytest.warns(UserWarning, match=r"classifier re-initialised for 5 classes \(the weights have 4\)"):
        exec(readme_block(), data)
    model = data["model"]
    assert model.num_classes == 5 and model.in_chans == 1 and sknet.data_config(model).classes[0] == "shirt"
    record = model.weights_meta["init_weights"]
    assert record["dataset"] == "synthetic" and record["num_classes"] == 4
    assert Path(record["path"]) == (tmp_path / "runs/fashion_mnist/model.safetensors").resolve()
    source = sknet.create_model(weights="runs/fashion_mnist/model.safetensors")
    assert not torch.equal(model.stem.conv.conv.weight, source.stem.conv.conv.weight)  # it trained on


def test_train_init_weights_cli_records_the_source_and_survives_resume(tmp_path, capsys):
    source = sknet.create_model("sknet_tiny", num_classes=10)
    weights = tmp_path / "source.safetensors"
    save_weights(weights, source, {"model": "sknet_tiny", "num_classes": 10, "in_chans": 1, "dataset": "fmnist"})
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"classifier re-initialised for 4 classes \(the weights have 10\)"):
        assert main(tiny_run(run, "--init-weights", str(weights))) == 0  # (the command prints it in one line)
    record = read_metadata(run / "model.safetensors")["init_weights"]
    assert record["dataset"] == "fmnist" and len(record["sha256"]) == 64 and record["num_classes"] == 10
    weights.unlink()  # a resumed run continues from its checkpoint, not from the starting weights
    assert main(["train", "--resume", str(run), "--epochs", "2", "--progress", "never"]) == 0
    assert read_metadata(run / "model.safetensors")["init_weights"] == record


def test_init_weights_of_another_model_is_one_line_before_any_data(tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    save_weights(weights, sknet.create_model("sknet_tiny"), {"model": "sknet_tiny", "num_classes": 10})
    argv = tiny_run(tmp_path, "--model", "resnext_tiny", "--init-weights", str(weights))
    assert main([*argv[:-1], str(tmp_path / "r")]) == 4
    err = capsys.readouterr().err
    assert "holds weights of model 'sknet_tiny', not 'resnext_tiny': add --model sknet_tiny" in err
    assert len(err.strip().splitlines()) == 1
