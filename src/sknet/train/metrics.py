"""Training statistics and the non-finite-loss guard, kept on the device.

Every step adds to device tensors; nothing is read back to the host per step (a host read waits for the
GPU to finish all queued work). The host reads them on demand: at a log interval, a progress refresh,
the end of an epoch, before a checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from sknet.errors import TrainingDiverged
from sknet.train.distributed import DistInfo, all_reduce_, all_reduce_sum
from sknet.train.step import skip_flag
from sknet.weights import first_non_finite


class EpochMetrics:
    """Sums of loss·n and correct predictions on the device; the image count on the host (known there).

    `resumed`: the epoch's totals before an interruption, [loss·n, correct, n, skipped images, seconds,
    skipped batches] (given to one process only, so that summing over processes counts them once).
    """

    def __init__(self, device: torch.device, resumed: list[float] | None = None) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.images = 0
        self.skipped: list[str] = []  # messages naming the images this process's loader could not read
        self.skipped_batches = 0  # batches left with too few images to train on (the same on every rank)
        self.resumed = [*(resumed or []), *[0.0] * 6][:6]

    @torch.no_grad()
    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        n = labels.shape[0]
        self.loss_sum += loss.detach().double() * n
        self.correct += (logits.detach().argmax(1) == labels).sum()
        self.images += n

    def running(self) -> tuple[float, float]:
        """This rank's loss and accuracy in this session of the epoch (a host read)."""
        n = max(self.images, 1)
        return self.loss_sum.item() / n, self.correct.item() / n

    def postfix(self, start: float, world_size: int) -> dict[str, str]:
        """The progress bar's loss, accuracy and images/s since `start` (a host read)."""
        loss, acc = self.running()
        rate = self.images * world_size / max(time.perf_counter() - start, 1e-9)
        return {"loss": f"{loss:.4f}", "acc": f"{100 * acc:.2f}%", "img/s": f"{rate:.0f}"}

    def totals(self, dist_info: DistInfo, seconds: float) -> list[float]:
        """[loss·n, correct, n, skipped images, seconds, skipped batches] of the epoch so far, summed over
        ranks (a collective; skipped batches are agreed by all ranks, so counted once)."""
        here = [self.loss_sum.item(), float(self.correct.item()), float(self.images), float(len(self.skipped))]
        summed = all_reduce_sum([a + b for a, b in zip(here, self.resumed, strict=False)], dist_info)
        return [*summed, self.resumed[4] + seconds, self.resumed[5] + self.skipped_batches]


def kept(checkpoint: Path) -> str:
    """What a stopped run left: the checkpoint named only when it exists."""
    if checkpoint.is_file():
        return f"the last good checkpoint ({checkpoint}) was kept"
    return "no checkpoint had been written yet (the run stopped before its first)"


class NonFiniteGuard:
    """Flags an accumulation group whose loss is NaN or infinite, on every rank, without a host read.

    `close_group` gives the flag for the optimizer step (:func:`~sknet.train.step.skip_flag`, > 0: skip the update, as
    AMP's scaler skips an overflow) after summing it over ranks, so every rank skips together; from the
    first bad step on, every step is skipped. That step is recorded on the device; `first_bad` reads it
    (a host read, done at log intervals).
    """

    def __init__(self, device: torch.device, dist_info: DistInfo) -> None:
        self.dist = dist_info
        self.group = skip_flag(torch.zeros((), device=device))
        self.batch = torch.full((), -1, dtype=torch.int64, device=device)  # batch (1-based) of the first bad step
        self.loss = torch.zeros((), dtype=torch.float32, device=device)  # this rank's loss there

    @torch.no_grad()
    def add(self, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach().float())
        self.group = torch.maximum(self.group, skip_flag(bad))
        # This rank's first non-finite value (NaN or inf) is what the message shows.
        first_here = bad & (self.loss == 0)
        self.loss = torch.where(first_here, loss.detach().float(), self.loss)

    @torch.no_grad()
    def close_group(self, batch: int) -> torch.Tensor:
        flag = all_reduce_(self.group, self.dist)
        self.batch = torch.where((self.batch < 0) & (flag > 0), batch, self.batch)
        self.group = torch.zeros_like(self.group)
        # Sticky: once a step was skipped, every later one is too, so that when the host reads the flag the
        # model is exactly as after the last good step (as if training had stopped right there).
        return skip_flag(self.batch >= 0)

    def first_bad(self) -> tuple[int, float] | None:
        """(batch, this rank's loss) of the first skipped step, or None (a host read)."""
        batch = int(self.batch.item())
        return None if batch < 0 else (batch, float(self.loss.item()))

    def raise_if_non_finite_state(self, state: dict, step: int, checkpoint: Path) -> None:
        """TrainingDiverged, before a checkpoint is written, when rank 0's model `state` (parameters and
        buffers: BatchNorm statistics can overflow while the loss stays finite) is not finite. One host
        read, agreed over ranks so that every rank stops."""
        bad = first_non_finite(state.items()) if self.dist.is_main else None
        if all_reduce_sum([float(bad is not None)], self.dist)[0] == 0:
            return
        name = repr(bad) if bad is not None else "a tensor of rank 0's model"
        raise TrainingDiverged(
            f"{name} held NaN or infinite values after step {step} (the loss was finite); "
            f"that checkpoint was not written, training stopped and {kept(checkpoint)}. Lower --lr, add "
            "--warmup-epochs or --grad-clip"
        )

    def raise_if_diverged(self, epoch: int, checkpoint: Path) -> None:
        """TrainingDiverged if a step was skipped for a non-finite loss (a host read; every rank reads the same
        all-reduced flag at the same step, so every rank stops)."""
        bad = self.first_bad()
        if bad is not None:
            batch, value = bad
            raise TrainingDiverged(
                f"the loss became {value} at epoch {epoch + 1}, batch {batch}; no update was applied from it, "
                f"training stopped and {kept(checkpoint)}. Lower --lr, add --warmup-epochs or --grad-clip"
            )
