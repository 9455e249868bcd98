"""Weight EMA: torch's ``AveragedModel`` with ``get_ema_multi_avg_fn``, updated after every optimizer step.

The average covers parameters and buffers (BatchNorm's running statistics too, as timm's ModelEmaV3);
integer buffers (``num_batches_tracked``) are copied. As torch's AveragedModel, the first update copies
the weights; update k > 1 is ``ema ← decay_k · ema + (1 − decay_k) · weights``. decay_k is `decay`, or with
`warmup` timm's ``ModelEmaV3`` warmup ``min(decay, 1 − (1 + (k − 1))^(−2/3))`` (gamma 1, power 2/3, timm's
defaults), which lets early weights fade fast in short runs.

No host-device synchronisation: AveragedModel holds the averaged copy (on the model's device) and the
update count (``n_averaged``, kept on the CPU), and the lerp is ``get_ema_multi_avg_fn``'s; the update loop
is ours because ``AveragedModel.update_parameters`` copies the count to the device every step (a
synchronising copy on CUDA). For a fixed decay the result is the same (tests compare them).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

WARMUP_POWER = 2 / 3  # timm ModelEmaV3's default warmup_power (warmup_gamma 1.0)


def ema_decay(decay: float, updates: int, warmup: bool) -> float:
    """The decay of the update that follows `updates` earlier ones (the first, updates = 0, copies)."""
    if updates == 0:
        return 0.0
    if not warmup:
        return decay
    return min(decay, 1.0 - (1.0 + updates) ** -WARMUP_POWER)


class WeightEMA:
    """The EMA of `model`'s weights; `.module` is the averaged copy (evaluate it, save it)."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False) -> None:
        self.decay, self.warmup = decay, warmup
        # device=None: the copy stays on the model's device and the count on the CPU.
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.averaged.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @property
    def updates(self) -> int:
        return int(self.averaged.n_averaged)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Average `model`'s current weights in (call after each optimizer step)."""
        pairs = list(zip(_tensors(self.module), _tensors(model), strict=True))
        first = self.updates == 0
        floats = [(e, c) for e, c in pairs if e.is_floating_point() and not first]
        if floats:
            ema, current = (list(t) for t in zip(*floats, strict=True))
            get_ema_multi_avg_fn(ema_decay(self.decay, self.updates, self.warmup))(ema, current, None)
        for ema_tensor, tensor in pairs:
            if first or not ema_tensor.is_floating_point():
                ema_tensor.copy_(tensor)
        self.averaged.n_averaged += 1

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)


def _tensors(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach() for t in itertools.chain(model.parameters(), model.buffers())]
