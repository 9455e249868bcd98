"""What a training checkpoint holds, and the random-number state that makes resuming exact.

A checkpoint is only ever taken at a consistent point: after an optimizer step (every buffer, BatchNorm's
running statistics included, is that of the step's end, and the next batch is the one after it), or at
the end of an epoch's training before its evaluation (`pending_epoch` then holds the epoch's training
statistics, and resuming evaluates it first). Resuming therefore repeats no batch and loses no record.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sknet.errors import CheckpointError, ConfigError, one_line

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
    train_seconds: float = 0.0  # wall time of fit() over every process of the run so far, up to the last save

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

    def start_clock(self) -> None:
        """From now on train_seconds counts this process's time too, after the seconds of those before it."""
        self._clock = (time.perf_counter(), self.train_seconds)

    def count_seconds(self) -> None:
        """train_seconds up to now (a resumed run's summary counts every process, not the last one)."""
        clock = getattr(self, "_clock", None)
        if clock is not None:
            self.train_seconds = clock[1] + time.perf_counter() - clock[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "global_step": self.global_step,
            "history": self.history,
            "pending_epoch": self.pending_epoch,
            "epoch_sums": list(self.epoch_sums),
            "train_seconds": self.train_seconds,
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
            float(state.get("train_seconds") or 0.0),  # checkpoints before 0.x did not count it
        )


def _count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


# What each entry of a training checkpoint must be: a damaged file can unpickle to anything.
ENTRIES = {
    "model": lambda v: isinstance(v, dict),
    "optimizer": lambda v: isinstance(v, dict) and isinstance(v.get("param_groups"), list),
    "scheduler": lambda v: isinstance(v, dict),
    "scaler": lambda v: v is None or isinstance(v, dict),
    "epoch": _count,
    "batch": _count,
    "global_step": _count,
    "history": lambda v: isinstance(v, list) and all(isinstance(row, dict) for row in v),
    "pending_epoch": lambda v: v is None or isinstance(v, dict),
    "rng": lambda v: isinstance(v, list) and v and all(isinstance(r, dict) for r in v),
    "config": lambda v: isinstance(v, dict),
    "meta": lambda v: isinstance(v, dict),
}


def check_training_state(state: dict[str, Any], source: str) -> None:
    """CheckpointError unless `state` has the entries of an sknet training checkpoint, each of its kind."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{source} is not an sknet training checkpoint")
    bad = next((key for key, ok in ENTRIES.items() if key not in state or not ok(state[key])), None)
    if bad is not None:
        raise CheckpointError(f"{source} is corrupt: its {bad!r} entry is missing or of the wrong kind")
    try:
        RunProgress.from_dict(state)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source} is corrupt: {one_line(err)}") from None


def read_training_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint (or, when it is damaged, the one before it), checked to be one."""
    from sknet.weights import load_checkpoint

    return load_checkpoint(path, fallback=True, check=check_training_state)


def resume_from(path: Path, parts, model_name: str, rank: int) -> RunProgress:
    """Restore `parts` (see restore) from the checkpoint at `path`; when it is damaged in any way (the
    file, its entries, or state that does not load into `parts`), from the previous checkpoint instead."""
    from sknet.weights import load_checkpoint

    progress: list[RunProgress] = []

    def check(state: dict[str, Any], source: str) -> None:
        check_training_state(state, source)
        progress.append(restore(state, source, parts, model_name, rank))

    load_checkpoint(path, fallback=True, check=check)
    return progress[-1]


def capture(parts, progress: RunProgress, config: dict[str, Any], meta: dict[str, Any], rngs: list) -> dict[str, Any]:
    """The checkpoint dictionary. `parts`: the trainer's model, optimizer, scheduler, scaler and recipe."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler else None,
        "recipe": parts.recipe.state_dict(),  # the weight EMA
        **progress.to_dict(),
        "rng": rngs,
        "config": config,
        "meta": meta,
    }


def check_world_size(saved: int, parts, source: str) -> None:
    """ConfigError when a run saved by `saved` processes (one RNG state each) is resumed by another number:
    the global batch, hence the optimisation, would change."""
    dist, config = getattr(parts, "dist", None), getattr(parts, "config", None)
    world = dist.world_size if dist is not None else 1
    if config is None or saved == world:
        return
    per_step, processes = config.batch_size * config.accum_steps, "process" if saved == 1 else "processes"
    raise ConfigError(
        f"{source} was trained by {saved} {processes} (global batch {saved * per_step}); resuming it with {world} "
        f"would make the global batch {world * per_step}: resume with {saved} processes (torchrun "
        f"--nproc_per_node {saved}), or start a new run"
    )


def restore(state: dict[str, Any], source: str, parts, model_name: str, rank: int) -> RunProgress:
    """Load a checkpoint dictionary into `parts`; set this rank's RNG; return where the run stands. The
    schedule is the configuration's (see continue_schedule), said in one line when that changes the lr."""
    from sknet.train.optim import continue_schedule
    from sknet.weights import load_state_into

    check_world_size(len(state["rng"]), parts, source)
    load_state_into(parts.model, state["model"], source, model_name, state.get("meta", {}).get("model"))
    try:
        parts.optimizer.load_state_dict(state["optimizer"])
        changed = continue_schedule(parts.scheduler, state["scheduler"])
        if parts.scaler is not None and state.get("scaler"):
            parts.scaler.load_state_dict(state["scaler"])
    except Exception as err:  # a changed configuration, or damage: torch raises many types here
        raise CheckpointError(f"{source}: optimizer state does not fit this configuration: {one_line(err)}") from None
    if changed is not None and rank == 0:
        config = parts.config
        logging.getLogger("sknet").info(
            f"the learning-rate schedule follows the configuration ({config.schedule.value}, {config.epochs} epochs): "
            f"at step {parts.scheduler.last_epoch} the learning rate goes from {changed[0]:.4g} (the checkpoint's "
            f"schedule) to {changed[1]:.4g}"
        )
    parts.recipe.load_state_dict(state.get("recipe"), source)
    parts.init_record = state["meta"].get("init_weights")  # where the run's first weights came from
    rngs = state["rng"]
    try:
        set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
    except Exception as err:
        raise CheckpointError(
            f"{source} is corrupt: its random generator states do not load ({one_line(err)})"
        ) from None
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
