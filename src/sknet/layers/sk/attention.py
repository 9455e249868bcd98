"""The SK attention, the bottom of the layer: Fuse (s → z) and Select's attention (z → a).

Fuse:   z = ReLU(BN(W s))                      s (N, C, 1, 1), W: d×C, d = max(C/r, L)  (paper eq. 4)
Select: a = softmax_m(A z) per channel          A: (M·C)×d, one 1×1 conv                  (paper eq. 5)
"""

from __future__ import annotations

import torch
from torch import nn

from sknet.layers.helpers import make_divisible


def attention_dim(channels: int, reduction: int = 16, min_dim: int = 32, divisor: int = 1) -> int:
    """d = max(C / r, L): width of the fused descriptor z (paper eq. 4). `divisor` > 1: C / r rounded by
    :func:`~sknet.layers.helpers.make_divisible` first (timm's ``rd_divisor``); 1: C // r (the paper)."""
    reduced = channels // reduction if divisor == 1 else make_divisible(channels / reduction, divisor)
    return max(reduced, min_dim)


class Fuse(nn.Module):
    """s (N, C, 1, 1) → z = ReLU(BN(W s)) (N, d, 1, 1)."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, dim, 1, bias=False)
        self.bn = nn.BatchNorm2d(dim)
        self.act = nn.ReLU(inplace=True)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.fc(s)))


class SelectAttention(nn.Module):
    """z (N, d, 1, 1) → attention (N, M, C): one 1×1 conv to M·C logits, softmax across the M paths."""

    def __init__(self, dim: int, channels: int, num_paths: int) -> None:
        super().__init__()
        self.channels = channels
        self.num_paths = num_paths
        self.fc = nn.Conv2d(dim, channels * num_paths, 1, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.fc(z).view(z.shape[0], self.num_paths, self.channels)
        return logits.softmax(dim=1)
