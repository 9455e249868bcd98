"""The plain tail: the SK equations as PyTorch ops, the readable reference (and what torch.fx and
torch.compile trace). Applies to everything; the dispatch tries it last."""

from __future__ import annotations

import torch

from sknet.layers.sk.select import select_paths
from sknet.layers.sk.split import Parts, finish_paths, pooled

NAME = "plain"


def applies(parts: Parts, convs: list[torch.Tensor]) -> bool:
    return True


def forward(parts: Parts, convs: list[torch.Tensor]) -> torch.Tensor:
    us = finish_paths(parts, convs)
    if parts.select is None:  # the plain-sum baseline (Table 7): accumulate, no stacking
        v = us[0]
        for u in us[1:]:
            v = v + u
        return v
    attention = parts.select(parts.fuse(pooled(us)))
    return select_paths(us, attention, normalized=True)
