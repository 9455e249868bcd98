import json
import os
import signal

import pytest
import torch

import sknet
from sknet.errors import CheckpointError, ConfigError
from sknet.train.trainer import Trainer, TrainingDiverged, TrainingInterrupted, train
from sknet.weights import load_checkpoint, read_weights
from tests.train.helpers import state_equal, tiny_config


def test_two_epochs_straight_equal_one_plus_resume(tmp_path):
    straight = Trainer(tiny_config(tmp_path / "a"))
    straight.fit()

    first = Trainer(tiny_config(tmp_path / "b", max_steps=len(straight.train_loader)))
    first.fit()
    state = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert state["epoch"] == 1 and state["batch"] == 0
    resumed = Trainer(tiny_config(tmp_path / "b"), resume=tmp_path / "b" / "checkpoint.pt")
    resumed.fit()
    state_equal(straight.model.state_dict(), resumed.model.state_dict())
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_interrupt_saves_resumable_checkpoint_and_resume_is_exact(tmp_path):
    straight = Trainer(tiny_config(tmp_path / "a"))
    straight.fit()

    def interrupt(epoch, batch):  # a real Ctrl-C, after the optimizer step of batch 5 of epoch 2
        if epoch == 1 and batch == 5:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="--resume"):
        Trainer(tiny_config(tmp_path / "b"), on_step=interrupt).fit()
    state = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert (state["epoch"], state["batch"]) == (1, 5)
    resumed = Trainer(tiny_config(tmp_path / "b"), resume=tmp_path / "b" / "checkpoint.pt")
    resumed.fit()
    state_equal(straight.model.state_dict(), resumed.model.state_dict())


def test_gradient_accumulation_matches_large_batch_without_bn_effects(tmp_path):
    # Two micro-batches of 8 accumulate to the gradient of one batch of 16 (BN sees 8 at a time, so
    # compare the first step's loss scale only): the run completes and learns.
    summary = train(tiny_config(tmp_path / "acc", batch_size=8, accum_steps=2, epochs=1))
    assert summary["epochs"] == 1
    assert 0 < summary["val_loss"] < 10


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    def poison(epoch, batch):
        if epoch == 1 and batch == 2:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))

    trainer = Trainer(tiny_config(tmp_path / "nan", epochs=3), on_step=poison)
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        trainer.fit()
    state = load_checkpoint(tmp_path / "nan" / "checkpoint.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_checkpoint_of_another_model_is_rejected(tmp_path):
    train(tiny_config(tmp_path / "sk", epochs=1))
    with pytest.raises(CheckpointError, match="holds weights of model 'sknet_tiny', not 'resnext_tiny'"):
        Trainer(
            tiny_config(tmp_path / "plain", model="resnext_tiny", model_options={}),
            resume=tmp_path / "sk" / "checkpoint.pt",
        )
    with pytest.raises(CheckpointError, match="holds weights of model 'sknet_tiny'"):
        sknet.create_model("resnext_tiny", weights=tmp_path / "sk" / "model.safetensors")
    with pytest.raises(CheckpointError, match="do not fit this model"):
        sknet.create_model("sknet_tiny", weights=tmp_path / "sk" / "model.safetensors", branches=(3, 5, 7))


def test_weights_round_trip_through_create_model(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "w", epochs=1))
    trainer.fit()
    model = sknet.create_model("sknet_tiny", weights=tmp_path / "w" / "model.safetensors").eval()
    x = torch.randn(3, 1, 16, 16)
    trainer.model.eval()
    torch.testing.assert_close(model(x), trainer.model(x))
    _, meta = read_weights(tmp_path / "w" / "model.safetensors")
    assert meta["model"] == "sknet_tiny" and meta["num_classes"] == 4 and meta["classes"][0] == "class0"
    for name in ("config.yaml", "metrics.csv", "metrics.jsonl", "curves.png", "summary.json"):
        assert (tmp_path / "w" / name).is_file(), name


def test_model_option_conflicting_with_data(tmp_path):
    with pytest.raises(ConfigError, match="num_classes=7 does not match the data"):
        Trainer(tiny_config(tmp_path / "c", model_options={"num_classes": 7}))


def test_same_seed_same_weights(tmp_path):
    a = Trainer(tiny_config(tmp_path / "a", epochs=1))
    a.fit()
    b = Trainer(tiny_config(tmp_path / "b", epochs=1))
    b.fit()
    state_equal(a.model.state_dict(), b.model.state_dict(), atol=0)


def test_pickle_that_runs_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"model": {"w": torch.zeros(1)}, "extra": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"refusing to load .*would run code"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refusing to load"):
        sknet.create_model("sknet_tiny", weights=tmp_path / "evil.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "evil.pt").read_bytes()[:50])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "cut.pt")


@pytest.mark.parametrize("progress", ["auto", "never"])
def test_plain_progress_lines_without_a_terminal(tmp_path, capsys, monkeypatch, progress):
    monkeypatch.setattr("sknet.progress.PLAIN_EVERY_S", 0.0)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    run = Trainer(tiny_config(tmp_path, epochs=1, progress=progress))
    run.fit()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch 1/1: batch")]
    if progress == "never":
        assert lines == []
    else:
        total = len(run.train_loader)
        assert len(lines) == total - 1  # every batch but the last (the epoch line follows it)
        assert lines[0].startswith(f"epoch 1/1: batch 1/{total} (") and ", img/s " in lines[0] and "ends in" in lines[0]


def test_own_in_memory_images_replace_the_config_dataset(tmp_path):
    # Trainer(datasets=...) trains on the caller's tensors (3 channels, 5 classes, 12×12 here).
    from sknet.data.datasets import Split, make_synthetic

    train, test = (make_synthetic(s, num_classes=5, size=12, channels=3, count=64) for s in (Split.TRAIN, Split.TEST))
    trainer = Trainer(tiny_config(tmp_path, epochs=1), datasets=(train, test))
    summary = trainer.fit()
    meta = trainer.weights_metadata()
    assert meta["num_classes"] == 5 and meta["in_chans"] == 3 and meta["input_size"] == 12
    assert trainer.model.state_dict()["fc.weight"].shape[0] == 5 and 0 <= summary["val_acc1"] <= 1


def test_a_batch_larger_than_the_data_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"batch size 512 × 1 process.* is more than the 256 training images"):
        Trainer(tiny_config(tmp_path, batch_size=512))


def test_outputs_get_the_usual_permissions_and_config_names_unused_options(tmp_path):
    old = os.umask(0o022)
    try:
        Trainer(tiny_config(tmp_path / "run", epochs=1)).fit()
    finally:
        os.umask(old)
    for name in ("model.safetensors", "checkpoint.pt"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name  # not mkstemp's 0600
    text = (tmp_path / "run" / "config.yaml").read_text()
    assert "# not used with this dataset: image_size, workers, bad_images" in text


def test_tensorboard_without_the_package_is_refused_before_work(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(
        ConfigError, match=r"--tensorboard needs the tensorboard package: pip install 'sknet\[tensorboard\]'"
    ):
        Trainer(tiny_config(tmp_path / "run", tensorboard=True))
    assert not (tmp_path / "run").exists()


def test_compiled_training_matches_eager_and_its_files_load_plainly(tmp_path):
    """`sknet train --compile` (inductor, on the CPU here): the same updates as eager training up to the
    compiler's rounding, weights and checkpoints without the compiled wrapper's key prefix, resumable.

    Two steps from the same start, no warmup (the updates are large), no dropout (inductor draws its own
    masks): this tiny model at lr 0.05 turns any rounding difference into a visible one within a dozen
    steps (eager with 1 vs 2 threads does too), so the updates are compared, not a long trajectory."""
    torch._dynamo.reset()  # no graphs left by other tests' compiles
    start, end = {}, {}
    for name, compile_model in (("eager", False), ("compiled", True)):
        config = tiny_config(
            tmp_path / name, epochs=1, max_steps=2, warmup_epochs=0, model_options={}, compile=compile_model
        )
        trainer = Trainer(config)
        start[name] = {k: v.clone() for k, v in trainer.model.state_dict().items() if v.is_floating_point()}
        trainer.fit()
        end[name] = trainer.model.state_dict()
    state_equal(start["eager"], start["compiled"], atol=0)
    eager = torch.cat([(end["eager"][k] - v).flatten() for k, v in start["eager"].items()])
    compiled = torch.cat([(end["compiled"][k] - v).flatten() for k, v in start["compiled"].items()])
    assert eager.norm() > 1.0  # two real steps
    assert (compiled - eager).norm() <= 1e-3 * eager.norm()
    model = sknet.create_model(weights=tmp_path / "compiled" / "model.safetensors")
    state_equal(model.state_dict(), end["compiled"], atol=0)
    checkpoint = tmp_path / "compiled" / "checkpoint.pt"
    assert not any(key.startswith("_orig_mod") for key in load_checkpoint(checkpoint)["model"])
    finish = tiny_config(tmp_path / "compiled", epochs=1, warmup_epochs=0, model_options={}, compile=True)
    Trainer(finish, resume=checkpoint).fit()
    rows = [json.loads(line) for line in (tmp_path / "compiled" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_the_compile_mode_reaches_torch_compile(monkeypatch, mode):
    from sknet.train import setup
    from sknet.train.distributed import DistInfo

    seen = {}
    monkeypatch.setattr(setup.torch, "compile", lambda model, **kwargs: seen.update(kwargs) or model)
    model = torch.nn.Linear(2, 2)
    config = tiny_config("unused", compile=True, compile_mode=mode)
    assert setup.wrap_for_training(model, config, DistInfo()) is model
    assert seen == {"mode": None if mode == "default" else mode}
