"""The paper's training transform (torchvision's ``transforms.v2``) for decoded images; the evaluation
transform is the preprocessing record's (:mod:`sknet.data.config`), re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2 as T

from sknet.data.config import eval_transform, to_tensor

__all__ = ["eval_transform", "train_transform"]  # eval_transform's home is sknet.data.config


def train_transform(
    size: int, mean: Sequence[float], std: Sequence[float], normalize: bool = True, auto_augment: str | None = None
) -> T.Compose:
    """Random-size crop (8–100 % of the area, aspect 3/4–4/3) + horizontal flip (paper section 4.1), then
    `auto_augment` when given (a policy of :mod:`sknet.data.augment`, on the uint8 image, as timm orders it)."""
    steps: list = [T.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)), T.RandomHorizontalFlip()]
    steps += to_tensor(mean, std, normalize=False)
    if auto_augment:
        from sknet.data.augment import RandomAugment

        steps.append(RandomAugment(auto_augment).one)
    if normalize:
        steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
    return T.Compose(steps)
