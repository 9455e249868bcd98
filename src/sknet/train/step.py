"""The optimizer update of one accumulation group, skipped on the device when its loss was not finite.

The decision needs no host read: fused optimizers (``fused=True``) take a ``found_inf`` tensor and leave
parameters and optimizer state untouched when it is non-zero, the mechanism AMP's gradient scaler uses
for overflows. With a scaler (fp16), a non-finite loss poisons one gradient so that the scaler's own
overflow check skips the step. An optimizer without that support falls back to a host read.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from sknet.train.config import Precision


def skip_flag(bad: torch.Tensor) -> torch.Tensor:
    """The skipped-update flag in the one shape every consumer takes: a 0-dim float32 tensor (> 0: skip).

    That is the ``found_inf`` torch's GradScaler hands fused optimizers; fused SGD also takes a (1,) tensor,
    but fused Adam/AdamW subtract it from their 0-dim step counts and refuse one."""
    return bad.detach().to(torch.float32).reshape(())


def autocast(precision: Precision, device: torch.device):
    """The autocast context of a precision (fp32: none)."""
    if precision is Precision.FP32:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision is Precision.BF16 else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def accumulation_group(batch: int, total: int, accum_steps: int) -> tuple[int, bool]:
    """(size of the accumulation group of `batch`, whether `batch` closes it); an epoch's last group may be
    short, and its loss is divided by its own size."""
    group_start = (batch // accum_steps) * accum_steps
    return min(accum_steps, total - group_start), (batch + 1) % accum_steps == 0 or batch + 1 == total


def forward_backward(model, x, y, criterion, precision: Precision, scaler, group: int, last_micro: bool):
    """One micro-batch: forward under autocast, loss, backward of loss / group (scaled with fp16). Under DDP
    gradients are all-reduced only with the group's last micro-batch. Returns (loss, logits)."""
    no_sync = not last_micro and isinstance(model, nn.parallel.DistributedDataParallel)
    with model.no_sync() if no_sync else contextlib.nullcontext():
        with autocast(precision, x.device):
            logits = model(x)
            loss = criterion(logits.float(), y)
        (scaler.scale(loss / group) if scaler else loss / group).backward()
    return loss, logits


class OptimizerStep:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        scaler: torch.amp.GradScaler | None,
        grad_clip: float | None,
    ) -> None:
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.grad_clip = grad_clip
        self.skips_on_device = bool(getattr(optimizer, "_step_supports_amp_scaling", False))

    def __call__(self, skip: torch.Tensor, skip_group: bool = False) -> None:
        """Apply the gradients unless `skip` (see :func:`skip_flag`) is > 0 or the host knows the group is skipped
        (`skip_group`: a batch left too small); then clear them and step the schedule."""
        if skip_group:
            # No update: the optimizer steps with no gradients (a no-op), so the schedule sees the usual order.
            self.optimizer.zero_grad(set_to_none=True)
            self.optimizer.step()
        elif self.scaler is not None:
            self._scaled_step(skip)
        else:
            if self.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            if self.skips_on_device:
                self.optimizer.found_inf = skip
                self.optimizer.step()
            elif not skip.item():  # pragma: no cover - our optimizers are fused
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def _scaled_step(self, skip: torch.Tensor) -> None:
        # Before unscale_, which is where the scaler looks for non-finite gradients.
        grad = next((p.grad for p in self.model.parameters() if p.grad is not None), None)
        if grad is not None:
            grad.add_(torch.where(skip > 0, float("nan"), 0.0).to(grad.dtype))
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
