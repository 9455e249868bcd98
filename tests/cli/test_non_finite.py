"""Non-finite weights: refused wherever weights are read (one line naming the first bad tensor, exit 4),
and never written into a checkpoint (the run stops as diverged, exit 5, the last sane checkpoint kept)."""

import pytest
import torch

import sknet
from sknet.cli import main
from sknet.errors import CheckpointError, TrainingDiverged
from sknet.train.trainer import Trainer
from sknet.weights import load_checkpoint, save_checkpoint, save_weights
from tests.train.helpers import tiny_config

META = {"model": "sknet_tiny", "model_options": {}, "num_classes": 10, "in_chans": 1, "dataset": "synthetic"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("nonfinite")
    model = sknet.create_model("sknet_tiny")
    names = list(model.state_dict())
    bad = names[len(names) // 2]  # one tensor in the middle of the file: the ones before it are fine
    with torch.no_grad():
        model.state_dict()[bad].view(-1)[0] = float("nan")
    save_weights(root / "nan.safetensors", model, META)
    torch.save(model.state_dict(), root / "nan.pt")
    (root / "x.png").write_bytes(b"")  # never read: the weights are refused first
    return root, bad


CASES = [
    ["predict", "{d}/x.png", "--weights", "{d}/nan.safetensors"],
    ["eval", "--weights", "{d}/nan.safetensors", "--dataset", "synthetic"],
    ["export", "--weights", "{d}/nan.safetensors", "--format", "pt2", "--out", "{d}/x.pt2"],
    [
        "convert",
        "--from",
        "timm",
        "skresnext50_32x4d",
        "--checkpoint",
        "{d}/nan.safetensors",
        "--out",
        "{d}/y.safetensors",
    ],
    ["eval", "--weights", "{d}/nan.pt", "--model", "sknet_tiny", "--dataset", "synthetic"],
]


@pytest.mark.parametrize("argv", CASES, ids=lambda a: a[0] + "-" + next(x for x in a if "nan." in x).split(".")[-1])
def test_every_command_refuses_non_finite_weights_in_one_line(files, capsys, argv):
    root, bad = files
    assert main([a.format(d=root) for a in argv]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"tensor {bad!r} holds NaN or infinite values" in err, err


def test_create_model_refuses_them_too(files):
    root, bad = files
    with pytest.raises(CheckpointError, match=f"tensor '{bad}' holds NaN"):
        sknet.create_model(weights=root / "nan.safetensors")


def test_a_checkpoint_with_broken_weights_gives_way_to_the_previous_one(tmp_path, capsys):
    out = tmp_path / "run"
    Trainer(tiny_config(out, epochs=1)).fit()
    state = load_checkpoint(out / "checkpoint.pt")
    good = {k: v.clone() for k, v in state["model"].items()}
    key = next(k for k in state["model"] if k.endswith("running_var"))
    state["model"][key].fill_(float("inf"))
    save_checkpoint(out / "checkpoint.pt", state)  # the good one becomes checkpoint.prev.pt
    with pytest.warns(UserWarning, match=f"tensor '{key}' holds NaN or infinite values; .*previous checkpoint"):
        restored = load_checkpoint(out / "checkpoint.pt", fallback=True)
    assert all(torch.equal(restored["model"][k], v) for k, v in good.items())
    (out / "checkpoint.prev.pt").unlink()
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err


def _poison_batchnorm(trainer, at_epoch):
    """on_step: from `at_epoch` (0-based) on, a BatchNorm running variance overflows (the loss stays finite:
    training normalises with batch statistics)."""

    def on_step(epoch, batch):
        if epoch >= at_epoch:
            bn = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var.fill_(float("inf"))

    return on_step


def test_a_checkpoint_is_never_written_with_non_finite_buffers(tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(out, epochs=3))
    trainer.on_step = _poison_batchnorm(trainer, at_epoch=1)
    with pytest.raises(
        TrainingDiverged,
        match=r"running_var' held NaN or infinite values after step 32 .*"
        r"the last good checkpoint \(.*checkpoint.pt\) was kept",
    ) as caught:
        trainer.fit()
    assert caught.value.exit_code == 5
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 1 and all(
        torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point()
    )


def test_a_run_that_stops_before_its_first_checkpoint_names_none(tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(out, epochs=1))
    trainer.on_step = _poison_batchnorm(trainer, at_epoch=0)
    with pytest.raises(TrainingDiverged, match=r"no checkpoint had been written yet"):
        trainer.fit()
    assert not (out / "checkpoint.pt").exists()


def test_class_names_that_do_not_match_the_classifier_are_refused(tmp_path, capsys):
    """Metadata consistency without assuming which keys exist: 3 names, no num_classes, a 10-way model."""
    model = sknet.create_model("sknet_tiny")
    meta = {k: v for k, v in META.items() if k != "num_classes"}
    save_weights(tmp_path / "w.safetensors", model, {**meta, "classes": ["a", "b", "c"]})
    (tmp_path / "x.png").write_bytes(b"")
    assert main(["predict", str(tmp_path / "x.png"), "--weights", str(tmp_path / "w.safetensors")]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3 class names for a model of 10 classes" in err, err


def test_a_caffe_model_with_non_finite_blobs_is_not_converted(tmp_path, monkeypatch, capsys):
    import sknet.convert.caffe as caffe

    model = sknet.create_model("sknet50", num_classes=4)
    with torch.no_grad():
        model.fc.bias[1] = float("inf")
    monkeypatch.setattr(caffe, "from_caffe", lambda *args: (model, "sknet50", {}))
    (tmp_path / "m.caffemodel").write_bytes(b"blobs")
    assert (
        main(["convert", "--from", "caffe", str(tmp_path / "m.caffemodel"), "--out", str(tmp_path / "w.safetensors")])
        == 4
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tensor 'fc.bias' holds NaN or infinite values" in err, err
    assert not (tmp_path / "w.safetensors").exists()
