"""What a new user meets first: downloads without a network, failed starts, the summary of a resumed
run, loader processes, messages (the "newcomer list" of issue #27)."""

import json
import types
import urllib.error

import pytest

from sknet.cli import main
from sknet.errors import clip, one_line, plural
from sknet.train.trainer import Trainer
from tests.train.helpers import tiny_config


@pytest.mark.parametrize(("dataset", "cls"), [("cifar10", "CIFAR10"), ("fashion_mnist", "FashionMNIST")])
def test_download_without_a_network_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, dataset, cls):
    import torchvision.datasets

    def offline(self):  # what torchvision does offline: make its folders, then fail in urllib
        (tmp_path / "data" / "partial" / "raw").mkdir(parents=True)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(getattr(torchvision.datasets, cls), "download", offline)
    monkeypatch.setattr("sknet.data.datasets._find_fashion_mnist", lambda root: None)  # even where Debian's is
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--dataset", dataset, "--download", "--output", "run", "--device", "cpu"]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "failed (no network?): [Errno -2] Name or service not known" in err, err
    assert list(tmp_path.iterdir()) == []  # no empty data/ folder, no run folder holding only .lock


def test_a_failed_start_leaves_no_folder_and_no_lock(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    argv = ["train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "nothing"), "--output", str(out)]
    assert main(argv) == 3
    assert not (tmp_path / "new" / "run").exists()
    kept = tmp_path / "kept"  # a folder that was there before stays, without a stray .lock
    kept.mkdir()
    assert main([*argv[:-1], str(kept)]) == 3
    assert kept.is_dir() and list(kept.iterdir()) == []


def test_the_summary_counts_every_process_of_a_resumed_run(tmp_path, monkeypatch, capsys):
    """A fake clock that advances 10 s per optimizer step: 3 steps, then 2 more after a resume, is 50 s."""
    clock = [0.0]
    monkeypatch.setattr("sknet.train.state.time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    tick = lambda epoch, batch: clock.__setitem__(0, clock[0] + 10)  # noqa: E731
    out = tmp_path / "run"
    Trainer(tiny_config(out, epochs=1, max_steps=3), on_step=tick).fit()
    assert json.loads((out / "summary.json").read_text())["train_seconds"] == 30
    summary = Trainer(tiny_config(out, epochs=1, max_steps=5), resume=out / "checkpoint.pt", on_step=tick).fit()
    assert summary["train_seconds"] == 50 == json.loads((out / "summary.json").read_text())["train_seconds"]


def test_only_rank_0_prints_done(monkeypatch, capsys, tmp_path):
    summary = {"epochs": 1, "train_seconds": 2.0, "val_acc1": 0.5, "val_acc5": 1.0, "output": str(tmp_path)}
    monkeypatch.setattr("sknet.train.trainer.train", lambda *a, **k: summary)
    argv = ["train", "--dataset", "synthetic", "--output", str(tmp_path / "o")]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(argv) == 0
    assert "done:" not in capsys.readouterr().out
    monkeypatch.setenv("RANK", "0")
    assert main(argv) == 0
    assert "done: 1 epoch in 2 s" in capsys.readouterr().out


def test_loader_processes_default_to_the_cores_available(monkeypatch):
    from sknet.data import cores, loader
    from sknet.train.config import TrainConfig

    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert loader.default_workers() == 2 == TrainConfig().workers == loader.LoaderOptions(batch_size=1).workers
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert loader.default_workers() == loader.MAX_DEFAULT_WORKERS


def test_messages_quote_other_texts_on_one_line_and_cut_them_at_a_word():
    assert one_line("a\nb\tc\x1b[31m é") == "a\\nb\\tc\\x1b[31m é"
    text = "An error happened while trying to locate the file. Please check your connection and try again"
    assert clip(text, 80) == "An error happened while trying to locate the file. Please check your connection…"
    assert clip("short") == "short"
    assert (plural(1, "epoch"), plural(2, "epoch"), plural(0, "epoch")) == ("1 epoch", "2 epochs", "0 epochs")


def test_a_file_name_with_a_newline_stays_on_one_line(tmp_path, capsys):
    hostile = tmp_path / "bad\nsknet: all good.png"
    hostile.write_bytes(b"not an image")
    weights = tmp_path / "w\n.safetensors"
    from sknet.weights import save_weights

    save_weights(weights, __import__("sknet").create_model("sknet_tiny"), {"model": "sknet_tiny"})
    assert main(["predict", str(hostile), "--weights", str(weights)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad\\nsknet: all good.png" in err, err
    assert main(["eval", "--weights", str(tmp_path / "missing\n.safetensors")]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing\\n.safetensors" in err, err


def test_an_error_in_a_loader_worker_reaches_the_user_as_its_own_line(tmp_path, capsys):
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (20, 20), (i * 40, 100, 200)).save(tmp_path / split / cls / f"{i}.png")
    (tmp_path / "train" / "cat" / "bad.jpg").write_bytes(b"not an image at all")
    argv = ["train", "--dataset", "imagefolder", "--data-dir", str(tmp_path), "--bad-images", "raise"]
    argv += ["--workers", "2", "--image-size", "16", "--batch-size", "3", "--model", "resnext_tiny", "--device", "cpu"]
    argv += ["--output", str(tmp_path / "run"), "--progress", "never", "--epochs", "1"]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "unreadable image" in err and "bad.jpg" in err, err
