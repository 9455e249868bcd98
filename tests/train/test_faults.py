"""Fault injection: a training process killed with SIGKILL, corrupted and truncated checkpoints."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from sknet.errors import CheckpointError
from sknet.train.trainer import Trainer
from sknet.weights import digest_path, load_checkpoint, previous_path, save_checkpoint
from tests.train.helpers import tiny_config

EPOCHS = 6


def train_argv(out, *extra):
    return [
        sys.executable,
        "-m",
        "sknet",
        "train",
        "--model",
        "sknet_tiny",
        "--dataset",
        "synthetic",
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "16",
        "--progress",
        "never",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--seed",
        "5",
        "--deterministic",
        "--output",
        str(out),
        *extra,
    ]


def epochs_logged(out):
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_kill_9_at_a_random_step_then_resume_loses_no_completed_epoch(tmp_path):
    out = tmp_path / "run"
    rng = random.Random(os.getpid())
    proc = subprocess.Popen(train_argv(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while len(epochs_logged(out)) < 2 and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.3))  # somewhere inside a later epoch (or while it saves)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    before = epochs_logged(out)
    assert len(before) >= 2, proc.stderr.read().decode()[-2000:]
    assert killed and len(before) < EPOCHS, "the run ended before the kill: make it longer"
    state = load_checkpoint(out / "checkpoint.pt", fallback=True)
    saved_epochs = int(state["epoch"])
    assert saved_epochs >= len(before) - 1  # at most the epoch being saved at the kill is not in the file

    resumed = subprocess.run(train_argv(out, "--resume", str(out / "checkpoint.pt")), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = epochs_logged(out)
    assert [row["epoch"] for row in after] == list(range(1, EPOCHS + 1))
    for row in before[:saved_epochs]:  # every epoch completed and checkpointed before the kill is kept as it was
        assert after[row["epoch"] - 1] == row
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == EPOCHS


def test_corrupt_checkpoint_falls_back_to_the_previous_one_with_a_warning(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "a", epochs=2))
    trainer.fit()
    path = tmp_path / "a" / "checkpoint.pt"
    prev = previous_path(path)
    assert prev.is_file() and digest_path(path).is_file() and digest_path(prev).is_file()
    assert int(load_checkpoint(prev)["epoch"]) == 1 and int(load_checkpoint(path)["epoch"]) == 2

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: torch.load might still read it, the checksum does not
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fails its checksum"):
        load_checkpoint(path)
    with pytest.warns(UserWarning, match="previous checkpoint"):
        resumed = Trainer(tiny_config(tmp_path / "a", epochs=3), resume=path)
    assert resumed.run.epoch == 1

    path.write_bytes(path.read_bytes()[:1000])  # truncated, sidecar removed: torch.load itself fails
    digest_path(path).unlink()
    with pytest.warns(UserWarning, match="corrupt or truncated"):
        assert int(load_checkpoint(path, fallback=True)["epoch"]) == 1


def test_a_crash_between_rotation_and_write_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})
    save_checkpoint(path, {"epoch": 2, "w": torch.ones(3)})
    path.unlink()  # as if killed after the old file was rotated away and before the new one landed
    with pytest.warns(UserWarning, match="does not exist"):
        assert load_checkpoint(path, fallback=True)["epoch"] == 1
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(path)


def test_refused_pickles_never_fall_back(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1})
    save_checkpoint(path, {"epoch": 2})  # a good previous checkpoint exists
    torch.save({"extra": Payload()}, path)
    digest_path(path).unlink()
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path, fallback=True)


def test_disk_full_while_checkpointing_is_one_line_exit_6_and_keeps_the_previous(tmp_path, monkeypatch, capsys):
    import errno

    from sknet import weights
    from sknet.cli import main

    out = tmp_path / "run"
    argv = train_argv(out)[3:]
    epochs = argv.index("--epochs")
    argv[epochs + 1] = "2"
    real_write = weights.atomic_write
    calls = {"n": 0}

    def full_disk(path, write):
        if path.name == "checkpoint.pt":
            calls["n"] += 1
            if calls["n"] == 2:  # the second checkpoint finds the disk full
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, write)

    monkeypatch.setattr(weights, "atomic_write", full_disk)
    assert main(argv) == 6
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"No space left on device while writing {out / 'checkpoint.pt'} (the previous checkpoint is kept)" in err
    assert int(load_checkpoint(out / "checkpoint.pt")["epoch"]) == 1  # still in place: no fallback needed
    assert not list(out.glob(".*.tmp"))


def test_checkpoint_pt_is_present_at_every_moment_of_a_save(tmp_path, monkeypatch):
    """Every file-system step of a save (link, copy, rename, unlink) is followed by a look: checkpoint.pt is
    there and holds a whole checkpoint after each one; the previous one is checkpoint.prev.pt at the end."""
    import os

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})
    seen = []

    def watched(real):
        def call(*args, **kwargs):
            result = real(*args, **kwargs)
            seen.append((real.__name__, path.is_file() and int(load_checkpoint(path)["epoch"])))
            return result

        return call

    for name in ("replace", "link", "unlink", "rename"):
        monkeypatch.setattr(os, name, watched(getattr(os, name)))
    save_checkpoint(path, {"epoch": 2, "w": torch.ones(3)})
    monkeypatch.undo()
    assert {"replace", "link"} <= {name for name, _ in seen}
    assert all(epoch in (1, 2) for _, epoch in seen), seen  # never absent (False), never unreadable
    assert load_checkpoint(path)["epoch"] == 2 and load_checkpoint(previous_path(path))["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_rotation_copies_where_the_file_system_has_no_hard_links(tmp_path, monkeypatch):
    import os

    def no_links(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1})
    monkeypatch.setattr(os, "link", no_links)
    save_checkpoint(path, {"epoch": 2})
    assert load_checkpoint(path)["epoch"] == 2 and load_checkpoint(previous_path(path))["epoch"] == 1
