"""What a training checkpoint holds, and the random-number state that makes resuming exact.

A checkpoint is only ever taken at a consistent point: after an optimizer step (every buffer, BatchNorm's
running statistics included, is that of the step's end, and the next batch is the one after it), or at
the end of an epoch's training before its evaluation (`pending_epoch` then holds the epoch's training
statistics, and resuming evaluates it first). Resuming therefore repeats no batch and loses no record.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sknet.errors import CheckpointError

CHECKPOINT_FORMAT = "sknet-checkpoint-v1"


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


@dataclass
class RunProgress:
    """Where a run stands: the next batch to train, and what has been recorded so far."""

    epoch: int = 0  # epochs whose training is complete
    batch: int = 0  # batches of the current epoch already trained
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per finished epoch
    pending_epoch: dict[str, Any] | None = None  # trained, not yet evaluated and recorded
    # loss·n, correct, n, skipped images, seconds, skipped batches of the current epoch so far (all ranks)
    epoch_sums: list[float] = field(default_factory=lambda: [0.0] * 6)

    def end_training_epoch(self, lr: float) -> None:
        """The epoch's training is complete: its row (to be evaluated and recorded) from the epoch's totals."""
        loss_sum, correct, n, skipped, seconds, skipped_batches = self.epoch_sums
        self.pending_epoch = {
            "epoch": self.epoch + 1,
            "train_loss": loss_sum / max(n, 1),
            "train_acc": correct / max(n, 1),
            "images_per_s": n / max(seconds, 1e-9),
            "epoch_time_s": seconds,
            "skipped_images": int(skipped),
            "skipped_batches": int(skipped_batches),
            "lr": lr,
        }
        self.epoch, self.batch, self.epoch_sums = self.epoch + 1, 0, [0.0] * 6

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "global_step": self.global_step,
            "history": self.history,
            "pending_epoch": self.pending_epoch,
            "epoch_sums": list(self.epoch_sums),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RunProgress:
        sums = [*(state.get("epoch_sums") or []), *[0.0] * 6][:6]  # checkpoints before skipped batches: 5
        return cls(
            int(state["epoch"]),
            int(state["batch"]),
            int(state["global_step"]),
            list(state.get("history", [])),
            state.get("pending_epoch"),
            [float(v) for v in sums],
        )


def read_training_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint (or, when it is damaged, the one before it), checked to be one."""
    from sknet.weights import load_checkpoint

    state = load_checkpoint(path, fallback=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an sknet training checkpoint")
    return state


def capture(parts, progress: RunProgress, config: dict[str, Any], meta: dict[str, Any], rngs: list) -> dict[str, Any]:
    """The checkpoint dictionary. `parts`: the trainer's model, optimizer, scheduler and scaler."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler else None,
        **progress.to_dict(),
        "rng": rngs,
        "config": config,
        "meta": meta,
    }


def restore(state: dict[str, Any], source: str, parts, model_name: str, rank: int) -> RunProgress:
    """Load a checkpoint dictionary into `parts`; set this rank's RNG; return where the run stands."""
    from sknet.weights import load_state_into

    load_state_into(parts.model, state["model"], source, model_name, state.get("meta", {}).get("model"))
    try:
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{source}: optimizer state does not fit this configuration: {err}") from None
    if parts.scaler is not None and state.get("scaler"):
        parts.scaler.load_state_dict(state["scaler"])
    rngs = state["rng"]
    set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
    return RunProgress.from_dict(state)


def write_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Save atomically (see sknet.weights.save_checkpoint); a full disk is a StorageError, the previous
    checkpoint kept."""
    from sknet.errors import storage_error
    from sknet.weights import save_checkpoint

    try:
        save_checkpoint(path, state)
    except OSError as err:
        raise storage_error(err, f"{path} (the previous checkpoint is kept)") from None
    return path
