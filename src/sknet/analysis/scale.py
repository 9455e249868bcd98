"""The paper's object enlargement (section 5): centre-crop a 1/s fraction of the image, resize back."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sknet.errors import ConfigError, InputShapeError


def enlarge_center(images: torch.Tensor, scale: float, mode: str = "bilinear") -> torch.Tensor:
    """(N, C, H, W) → (N, C, H, W): the central round(H/s)×round(W/s) crop resized back to H×W.

    A centred object of side a becomes one of side ≈ a·s. `scale` = 1 returns the images unchanged.
    Works on normalised images too: per-channel affine normalisation commutes with interpolation.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputShapeError(f"enlarge_center expects images (N, C, H, W), got {shape}")
    scale = float(scale)
    if not scale >= 1.0:  # also rejects NaN
        raise ConfigError(f"scale must be ≥ 1 (an enlargement), got {scale}")
    if scale == 1.0:
        return images
    h, w = images.shape[-2:]
    ch, cw = max(1, round(h / scale)), max(1, round(w / scale))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = images[..., top : top + ch, left : left + cw]
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(crop.float(), size=(h, w), mode=mode, **kwargs)
    return out.to(images.dtype) if images.is_floating_point() else out.round().clamp(0, 255).to(images.dtype)
