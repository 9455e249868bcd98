"""The modern training recipe in the loop: MixUp/CutMix targets, the weight EMA, which weights are kept.

Its options (timm's names and meanings) are declared with the others in :mod:`sknet.train.config`; the
per-image augmentations they come with (auto-augment, random erasing) run in the data pipeline
(:mod:`sknet.data.augment`). Each random draw is keyed by (seed, epoch, step, rank), and the EMA is in
the checkpoint, so resuming mid-epoch is exact.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sknet.data.augment import MixCut, keyed_rng
from sknet.train.ema import WeightEMA


class Recipe:
    """Built from a TrainConfig: `targets` mixes a batch, `after_step` updates the EMA, `evaluate` evaluates
    the weights and their EMA, `final` picks the weights to save."""

    def __init__(self, config, classes: int, model: nn.Module, rank: int) -> None:
        self.seed, self.rank, self.weights_from = config.seed, rank, config.weights_from
        self.label_smoothing = config.label_smoothing
        self.mix = None
        if config.mixup > 0 or config.cutmix > 0:
            self.mix = MixCut(
                classes,
                config.mixup,
                config.cutmix,
                config.mixup_prob,
                config.mixup_switch_prob,
                config.label_smoothing,
            )
        self.ema = WeightEMA(model, config.ema_decay, config.ema_warmup) if config.ema_decay else None

    def criterion(self) -> nn.Module:
        """The loss: with mixing, cross-entropy of the (already smoothed) soft targets (timm's
        SoftTargetCrossEntropy); else cross-entropy with label smoothing."""
        return nn.CrossEntropyLoss(label_smoothing=0.0 if self.mix else self.label_smoothing)

    def targets(self, x: torch.Tensor, labels: torch.Tensor, epoch: int, step: int):
        """(x, labels) → (input, target) of batch `step` of `epoch`: mixed with soft targets, or as they are."""
        if self.mix is None:
            return x, labels
        with keyed_rng(self.seed, epoch, step, self.rank, 3):
            return self.mix(x, labels)

    def after_step(self, model: nn.Module) -> None:
        if self.ema is not None:
            self.ema.update(model)

    def evaluate(self, model: nn.Module, run) -> dict[str, float] | None:
        """{val_loss, val_acc1, ...} of `model` by `run(model)`, and val_ema_... of its EMA beside them; None
        when `run` was interrupted."""
        results: dict[str, float] = {}
        for prefix, evaluated in [("", model)] + ([("ema_", self.ema.module)] if self.ema is not None else []):
            found = run(evaluated)
            if found is None:
                return None
            results.update({f"val_{prefix}{k}": v for k, v in found.items()})
        return results

    def final(self, model: nn.Module, history: list[dict[str, Any]]) -> nn.Module:
        """The weights model.safetensors gets (`weights_from`); "better" compares the last evaluation."""
        if self.ema is None or self.weights_from == "raw":
            return model
        if self.weights_from == "ema":
            return self.ema.module
        last = next((row for row in reversed(history) if "val_acc1" in row), {})
        return self.ema.module if last.get("val_ema_acc1", -1.0) > last.get("val_acc1", -1.0) else model

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state: dict[str, Any] | None, source: str) -> None:
        from sknet.errors import CheckpointError

        saved = (state or {}).get("ema")
        if self.ema is None:
            return
        if saved is None:
            raise CheckpointError(f"{source} has no EMA weights to continue (the run was trained without one)")
        self.ema.load_state_dict(saved)
