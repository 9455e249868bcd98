"""Squeeze-and-Excitation (Hu et al.), as used by SENet on a bottleneck's expanded output."""

from __future__ import annotations

import torch
from torch import nn

from sknet.layers.checks import check_positive_int


class SqueezeExcite(nn.Module):
    """x (N, C, H, W) → x ⊙ sigmoid(W2 ReLU(W1 mean_HW(x))); W1: C/r × C, W2: C × C/r, both with bias."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("se_reduction", reduction)
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))
