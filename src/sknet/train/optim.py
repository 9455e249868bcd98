"""Optimizers and per-step learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from sknet.train.config import Optimizer, Schedule, TrainConfig


def param_groups(model: nn.Module, weight_decay: float, no_decay_bn_bias: bool) -> list[dict]:
    """One group, or two when BN weights and biases (all 1-D parameters) are excluded from decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_decay_bn_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _fused_ok(model: nn.Module) -> bool:
    """Fused kernels: one launch per step on GPUs, and an update that can be skipped on the device
    (``found_inf``) without a host read; they need floating-point parameters on a supported device."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    supported = _get_fused_kernels_supported_devices()
    return all(p.is_floating_point() and p.device.type in supported for p in model.parameters())


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, config.weight_decay, config.no_decay_bn_bias)
    fused = _fused_ok(model)
    kind = torch.optim.AdamW if config.optimizer is Optimizer.ADAMW else torch.optim.SGD
    return kind(groups, **config.optimizer_kwargs(), fused=fused)


class LRFactor:
    """lr multiplier at optimizer step s: linear warmup, then step / cosine / constant."""

    def __init__(self, config: TrainConfig, steps_per_epoch: int) -> None:
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.total = config.epochs * self.steps_per_epoch
        self.warmup = round(config.warmup_epochs * self.steps_per_epoch)
        # Plain values only: LambdaLR.state_dict() copies this object's __dict__ into checkpoints, which
        # are loaded with weights_only=True.
        self.schedule = config.schedule.value
        self.step_epochs = config.step_epochs
        self.gamma = config.gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.schedule == Schedule.STEP.value:
            return self.gamma ** ((step // self.steps_per_epoch) // self.step_epochs)
        if self.schedule == Schedule.COSINE.value:
            progress = (step - self.warmup) / max(self.total - self.warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(config, steps_per_epoch))


def continue_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, saved: dict) -> tuple[float, float] | None:
    """Load a checkpoint's schedule state into `scheduler`: where the run stands (its step), not the shape
    of its schedule, which is the configuration's (LambdaLR would restore the LRFactor saved with it, so a
    run resumed with more --epochs went on at the old schedule's end: at lr 0 for a cosine). A resumed run
    therefore continues on the schedule of its current configuration: step and constant schedules do not
    depend on the length; a cosine is laid over the new number of epochs from the run's start, warmup
    unchanged. Returns (saved lr, lr now) of the first group when the configuration changed the lr at this
    step, else None (the lrs are then left exactly as saved: an unchanged resume stays bit-exact)."""
    factor = scheduler.lr_lambdas[0]
    saved_factor = (saved.get("lr_lambdas") or [None])[0]
    scheduler.load_state_dict({**saved, "lr_lambdas": [None] * len(scheduler.lr_lambdas)})
    if saved_factor == vars(factor):
        return None
    groups = scheduler.optimizer.param_groups
    before = groups[0]["lr"]
    for group, base, lmbda in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base * lmbda(scheduler.last_epoch)  # as LambdaLR.get_lr computes it
    scheduler._last_lr = [group["lr"] for group in groups]
    return (before, groups[0]["lr"]) if groups[0]["lr"] != before else None
