"""SIGTERM (what SLURM and Kubernetes send before a kill) and SIGINT at random points of a real training
process, including inside an evaluation: the process saves at a consistent point and exits 75; resuming
with `--resume RUN` alone ends with every parameter *and buffer* equal to an uninterrupted run's, and with
every epoch's record present once."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from sknet.train.trainer import Trainer, TrainingInterrupted
from sknet.weights import read_weights
from tests.train.helpers import state_equal, tiny_config
from tests.train.test_faults import epochs_logged, train_argv

INTERRUPTED = 75  # sknet.errors.TrainingInterrupted.exit_code
LONG = ("--epochs", "16")  # ~0.2 s an epoch here: long enough for a random point to land inside the run


def long_argv(out):
    return train_argv(out, *LONG)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    result = subprocess.run(long_argv(out), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return read_weights(out / "model.safetensors")[0], epochs_logged(out)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "seed"), [(signal.SIGTERM, 1), (signal.SIGINT, 2), (signal.SIGTERM, 3)])
def test_signal_at_a_random_point_then_resume_alone_is_exact(tmp_path, reference, sig, seed):
    out = tmp_path / "run"
    proc = subprocess.Popen(long_argv(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while len(epochs_logged(out)) < 1 and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(random.Random(seed).uniform(0.0, 2.0))  # somewhere in a later epoch: a step, a save, an evaluation
    sent = proc.poll() is None
    if sent:
        proc.send_signal(sig)
    _, err = proc.communicate()
    assert sent, "the run ended before the signal: make it longer"
    assert proc.returncode == INTERRUPTED, err[-2000:]
    assert "saved a resumable checkpoint" in err and "Traceback" not in err, err[-2000:]
    assert not list(out.glob(".*.tmp"))  # no temporary checkpoint file left behind

    resumed = subprocess.run(
        [sys.executable, "-m", "sknet", "train", "--resume", str(out)], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    weights, rows = reference
    state_equal(weights, read_weights(out / "model.safetensors")[0], atol=0)  # BN buffers included
    logged = epochs_logged(out)
    assert [r["epoch"] for r in logged] == list(range(1, int(LONG[1]) + 1))
    for mine, theirs in zip(logged, rows, strict=True):  # the same records (times aside)
        for key in ("train_loss", "train_acc", "val_loss", "val_acc1", "lr"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-9, abs=1e-12), (mine["epoch"], key)


class SignalDuringEvaluation:
    """Wraps a loader: sends SIGTERM to this process before the first batch of the evaluation of `epoch`."""

    def __init__(self, loader, trainer, epoch):
        self.loader, self.trainer, self.epoch = loader, trainer, epoch

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        if self.trainer.run.epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)
        yield from self.loader


@pytest.mark.parametrize("epoch", [1, 2])  # mid-run, and the final evaluation
def test_sigterm_during_evaluation_evaluates_again_on_resume(tmp_path, epoch):
    straight = Trainer(tiny_config(tmp_path / "a"))
    straight.fit()
    trainer = Trainer(tiny_config(tmp_path / "b"))
    trainer.val_loader = SignalDuringEvaluation(trainer.val_loader, trainer, epoch)
    with pytest.raises(TrainingInterrupted, match=f"SIGTERM: stopped during the evaluation of epoch {epoch}"):
        trainer.fit()
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == epoch and state["pending_epoch"]["epoch"] == epoch
    assert len(epochs_logged(tmp_path / "b")) == epoch - 1

    resumed = Trainer(tiny_config(tmp_path / "b"), resume=tmp_path / "b" / "checkpoint.pt")
    summary = resumed.fit()
    state_equal(straight.model.state_dict(), resumed.model.state_dict(), atol=0)
    rows = epochs_logged(tmp_path / "b")
    assert [r["epoch"] for r in rows] == [1, 2] and all("val_acc1" in r for r in rows)
    assert summary["val_acc1"] == pytest.approx(straight.run.history[-1]["val_acc1"])
    expected = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["val_acc1"] == pytest.approx(expected["val_acc1"])


def test_sigint_mid_epoch_keeps_the_epoch_totals(tmp_path):
    straight = Trainer(tiny_config(tmp_path / "a", epochs=1))
    straight.fit()

    def interrupt(epoch, batch):
        if batch == 7:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="SIGINT: stopped at epoch 1, batch 7"):
        Trainer(tiny_config(tmp_path / "b", epochs=1), on_step=interrupt).fit()
    Trainer(tiny_config(tmp_path / "b", epochs=1), resume=tmp_path / "b" / "checkpoint.pt").fit()
    (mine,), (theirs,) = epochs_logged(tmp_path / "b"), epochs_logged(tmp_path / "a")
    assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-12)
    assert mine["train_acc"] == theirs["train_acc"]


# A real training process whose evaluations announce themselves (a marker file) and take a while, so that a
# signal sent from outside lands inside one: the run must save the trained epoch and evaluate it on resume.
SLOW_EVALUATION = """
import sys, time
from pathlib import Path
from sknet.train import trainer

real_evaluate = trainer.evaluate


def slow_evaluate(model, loader, *args, **kwargs):
    class Slow:
        info = getattr(loader, "info", None)

        def __len__(self):
            return len(loader)

        def __iter__(self):
            for batch in loader:
                Path(sys.argv[sys.argv.index("--output") + 1], "evaluating").touch()
                time.sleep(0.4)
                yield batch

    return real_evaluate(model, Slow(), *args, **kwargs)


trainer.evaluate = slow_evaluate
from sknet.cli.main import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "seed"), [(signal.SIGTERM, 4), (signal.SIGINT, 5)])
def test_signal_during_evaluation_in_a_real_process(tmp_path, sig, seed):
    script = tmp_path / "slow_eval.py"
    script.write_text(SLOW_EVALUATION)
    straight = tmp_path / "straight"
    assert subprocess.run(train_argv(straight), capture_output=True).returncode == 0
    out = tmp_path / "run"
    argv = [sys.executable, str(script), *train_argv(out)[3:]]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marker = out / "evaluating"
    wanted = random.Random(seed).randint(1, 3)  # the evaluation of epoch 2, 3 or 4
    while len(epochs_logged(out)) < wanted and proc.poll() is None:
        time.sleep(0.01)
    marker.unlink(missing_ok=True)
    while not marker.exists() and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate()
    assert proc.returncode == INTERRUPTED and f"stopped during the evaluation of epoch {wanted + 1}" in err, err[-2000:]
    assert len(epochs_logged(out)) == wanted  # the interrupted epoch is not recorded yet...

    resumed = subprocess.run([sys.executable, "-m", "sknet", "train", "--resume", str(out)], capture_output=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    state_equal(read_weights(straight / "model.safetensors")[0], read_weights(out / "model.safetensors")[0], atol=0)
    mine, theirs = epochs_logged(out), epochs_logged(straight)
    assert [r["epoch"] for r in mine] == [r["epoch"] for r in theirs]  # ...and then exactly once
    for a, b in zip(mine, theirs, strict=True):
        assert a["val_acc1"] == b["val_acc1"] and a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-12)
