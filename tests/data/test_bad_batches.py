"""Unreadable images never stop a run: a training batch left with fewer than 2 images, or an evaluation
batch left with none, is skipped and counted, and every skipped file is named in the run folder."""

import json

import pytest
from PIL import Image

from sknet.cli.main import main
from sknet.data.folder import ShardedSampler


def _cut_jpeg() -> bytes:
    """A JPEG cut inside its pixel data: its header reads (a class of these is not refused before the run,
    as a class of files that are no images is), its pixels do not."""
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (40, 36), (0, 200, 0)).save(buffer, "JPEG")
    data = buffer.getvalue()
    return data[: data.find(b"\xff\xda") + 20]  # 20 bytes past the start-of-scan marker


def _folder(root, train_readable=2):
    for split, readable, broken in (("train", train_readable, ("x", "y")), ("val", 2, ("x", "y"))):
        for c, colour in (("blue", (0, 0, 200)), ("red", (200, 0, 0))):
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(readable):
                Image.new("RGB", (40, 36), tuple(min(255, v + 20 * i) for v in colour)).save(folder / f"{i}.png")
            for name in broken:
                (folder / f"{name}.jpg").write_bytes(_cut_jpeg())
    return root


def _train_args(data, out, *extra):
    return [
        "train", "--model", "sknet_tiny", "--dataset", "imagefolder", "--data-dir", str(data), "--image-size",
        "32", "--workers", "0", "--batch-size", "2", "--epochs", "1", "--progress", "never", "--output", str(out),
        *extra,
    ]  # fmt: skip


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_batches_left_too_small_are_skipped_counted_and_named(tmp_path, capsys):
    data = _folder(tmp_path / "data")
    assert main(_train_args(data, tmp_path / "run")) == 0
    # The epoch's order (seed 0): samples 2, 3, 6, 7 of the 8 are unreadable (x.jpg, y.jpg of each class).
    sampler = ShardedSampler(8, True, seed=0)
    order = list(sampler)
    pairs = [order[i : i + 2] for i in range(0, 8, 2)]
    too_small = sum(1 for pair in pairs if sum(i % 4 < 2 for i in pair) < 2)
    assert too_small >= 1  # the case this test is about does happen in this order
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert row["skipped_images"] == 4 and row["skipped_batches"] == too_small
    assert row["val_skipped"] == 4 and row["val_images"] == 4
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_images"] == 4 and summary["skipped_batches"] == too_small
    named = (tmp_path / "run" / "skipped_images.txt").read_text().splitlines()
    assert len(named) == 8 and sum("epoch 1 train:" in line for line in named) == 4
    assert {line.rsplit("/", 2)[-2] + "/" + line.rsplit("/", 1)[-1][:5] for line in named if "val:" in line} == {
        "blue/x.jpg",
        "blue/y.jpg",
        "red/x.jpg",
        "red/y.jpg",
    }
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("epoch 1/"))
    train, test = line.split(" | ")  # each half names its own loader's skips
    assert f"(4 unreadable training images skipped, {too_small} batches left too small skipped)" in train
    assert "(4 unreadable test images skipped)" in test

    # Evaluation: with --batch-size 2 the batches (x.jpg, y.jpg) have nothing readable; counted, not a crash.
    weights = str(tmp_path / "run" / "model.safetensors")
    argv = ["eval", "--weights", weights, "--data-dir", str(data), "--workers", "0", "--batch-size", "2"]
    assert main(argv) == 0
    assert "4 images, 4 unreadable images skipped)" in capsys.readouterr().out
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["skipped"] == 4

    # --bad-images raise: the first unreadable file stops the run, a data error naming it on one line (also
    # when a loader worker process raised it).
    for workers in ("0", "2"):
        argv = [*_train_args(data, tmp_path / f"run{workers}", "--bad-images", "raise"), "--workers", workers]
        assert main(argv) == 3
        err = capsys.readouterr().err
        assert "unreadable image: cannot read image" in err and ".jpg" in err and err.count("\n") == 1, err


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_a_run_whose_every_training_batch_is_skipped_still_finishes(tmp_path):
    data = _folder(tmp_path / "data", train_readable=0)  # nothing readable to train on
    assert main(_train_args(data, tmp_path / "run", "--step-log-every", "1")) == 0
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert row["skipped_images"] == 4 and row["skipped_batches"] == 2 and row["val_images"] == 4
    assert not (tmp_path / "run" / "steps.jsonl").exists()  # no loss to log from a skipped step


@pytest.mark.slow
def test_under_torchrun_every_rank_skips_the_same_steps(tmp_path):
    """A step where one rank's batch is left too small and the other's is not: both skip it (else DDP's
    gradient all-reduce would wait forever on the rank that skipped)."""
    import os
    import subprocess
    import sys

    data = _folder(tmp_path / "data", train_readable=4)  # per class: 4 readable, then x.jpg and y.jpg
    order = list(ShardedSampler(12, True, seed=65))  # a seed whose order has the three kinds of step below
    shares = [order[r::2] for r in range(2)]
    steps = [[share[k : k + 2] for share in shares] for k in range(0, 6, 2)]
    readable = [[sum(i % 6 < 4 for i in pair) for pair in step] for step in steps]
    assert readable == [[0, 1], [1, 2], [2, 2]]  # both ranks short, one rank short (skipped by both), trained
    args = _train_args(data, tmp_path / "run", "--device", "cpu", "--threads", "1", "--seed", "65")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    # A hang guard only (a deadlock never ends); the run itself takes seconds.
    # wall-clock: a guard against a hung gloo rendezvous only, far above the run's time on a busy machine
    result = subprocess.run([*torchrun, "-m", "sknet", *args], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert row["skipped_images"] == 4 and row["skipped_batches"] == 2 and row["val_images"] == 4
    assert len((tmp_path / "run" / "skipped_images.txt").read_text().splitlines()) == 8  # both ranks' files
