"""Small, fast training configurations for tests (synthetic data, tiny model, CPU)."""

from __future__ import annotations

from pathlib import Path

import torch

from sknet.train.config import TrainConfig


def tiny_config(output: Path, **changes) -> TrainConfig:
    values = dict(
        model="sknet_tiny",
        dataset="synthetic",
        epochs=2,
        batch_size=16,
        lr=0.05,
        schedule="cosine",
        warmup_epochs=0.5,
        output=str(output),
        progress="never",
        seed=3,
        deterministic=True,
        threads=1,
        device="cpu",  # CPU behaviour (exact resume to 1e-6): pinned, also on a machine with a GPU
        model_options={"drop_rate": 0.1},
    )
    values.update(changes)
    return TrainConfig(**values)


def state_equal(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=0, atol=atol, msg=k)


# A training run as a user types it, as small as a test needs: one epoch of synthetic data on the CPU.
TINY_RUN = ["train", "--dataset", "synthetic", "--epochs", "1", "--batch-size", "32", "--progress", "never"]
TINY_RUN += ["--threads", "1", "--device", "cpu"]


def tiny_run(output, *flags: str) -> list[str]:
    """`sknet train` arguments of a tiny run writing to `output`, with `flags` added (later flags win)."""
    return [*TINY_RUN, *flags, "--output", str(output)]
