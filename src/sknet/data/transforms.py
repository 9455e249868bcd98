"""The paper's image transforms (torchvision's ``transforms.v2``), for folder datasets and `sknet predict`.

PIL images in, plain tensors out (``ToPureTensor``: no tv_tensors subclass leaks into collation or models).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.transforms import v2 as T

from sknet.weights import EVAL_CROP_FRACTION

INTERPOLATION = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


def _to_tensor(mean: Sequence[float], std: Sequence[float], normalize: bool) -> list:
    # normalize=False: uint8 tensors, 4× less to collate and copy; the trainer normalises on the device.
    if not normalize:
        return [T.PILToTensor(), T.ToPureTensor()]
    return [T.PILToTensor(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std), T.ToPureTensor()]


def train_transform(
    size: int, mean: Sequence[float], std: Sequence[float], normalize: bool = True, auto_augment: str | None = None
) -> T.Compose:
    """Random-size crop (8–100 % of the area, aspect 3/4–4/3) + horizontal flip (paper section 4.1), then
    `auto_augment` when given (a policy of :mod:`sknet.data.augment`, on the uint8 image, as timm orders it)."""
    steps: list = [T.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)), T.RandomHorizontalFlip()]
    steps += _to_tensor(mean, std, normalize=False)
    if auto_augment:
        from sknet.data.augment import RandomAugment

        steps.append(RandomAugment(auto_augment).one)
    if normalize:
        steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
    return T.Compose(steps)


def eval_transform(
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_fraction: float = EVAL_CROP_FRACTION,
    channels: int = 3,
    normalize: bool = True,
    interpolation: str = "bilinear",
) -> T.Compose:
    """Resize the shorter side to size / crop_fraction, centre-crop `size` (single-crop protocol).

    crop_fraction = 1 resizes straight to `size` (small-image datasets that were trained uncropped).
    """
    steps: list = [T.Grayscale(1)] if channels == 1 else []
    mode = INTERPOLATION[interpolation]
    if crop_fraction >= 1.0:
        steps.append(T.Resize((size, size), interpolation=mode))
    else:
        # Rounded down, as timm's eval transform (224 / 0.95 → 235), so that both give the same tensor.
        steps += [T.Resize(math.floor(size / crop_fraction), interpolation=mode), T.CenterCrop(size)]
    steps += _to_tensor(mean, std, normalize)
    return T.Compose(steps)
