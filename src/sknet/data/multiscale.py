"""Multi-scale Fashion-MNIST: each 28×28 object resized to a random scale and pasted on a larger canvas.

Plain Fashion-MNIST objects all fill the same 28×28 frame, so a network never *needs* a receptive field
that adapts to object size. Here the object side is 28·s pixels, s drawn uniformly from `scale_range`,
at a random position on a `canvas`×`canvas` black background: the data the attention analysis of the
paper (section 5) is about. Generation is deterministic in `seed` (train and test use different seeds).

``centered_canvas`` gives the analysis images: the original objects at scale 1.0 in the canvas centre,
so that the paper's enlargement (centre-crop 1/s and resize back) grows them to 1.5× and 2.0×.

The half-size variant (``HALF``: objects 14 pixels at scale 1, 10–28 pixels on a 28×28 canvas) is the same
geometry at a quarter of the pixels: a network trains on it as fast as on plain Fashion-MNIST (the claims
study, benchmarks/claims.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sknet.data.tensors import InMemoryImages

CANVAS = 56
SCALE_RANGE = (0.75, 2.0)
# Normalisation of the 56×56 canvases (objects cover a small part of them), measured on the train split
# with the default scale range; the centred canvas uses the same values so models see one input scale.
MULTISCALE_MEAN = (0.1449,)
MULTISCALE_STD = (0.2802,)
# The half-size variant: objects of 14 pixels at scale 1 on a 28×28 canvas (measured the same way).
HALF_CANVAS = 28
HALF_OBJECT = 14
HALF_MEAN = (0.1453,)
HALF_STD = (0.2760,)


def resize_objects(objects: torch.Tensor, sides: torch.Tensor) -> list[torch.Tensor]:
    """Objects (N, C, h, w) uint8, each resized to its side `sides` (N,) pixels (bilinear, antialiased,
    rounded): a list of N uint8 tensors (C, side, side). Objects of one side are resized in one call."""
    out: list[torch.Tensor] = [objects[:0]] * len(sides)
    for side in sides.unique().tolist():
        index = (sides == side).nonzero().flatten()
        resized = F.interpolate(objects[index].float(), size=(side, side), mode="bilinear", antialias=True)
        resized = resized.round().clamp(0, 255).to(torch.uint8)
        for j, i in enumerate(index.tolist()):
            out[i] = resized[j]
    return out


def paste_objects(objects: torch.Tensor, sides: torch.Tensor, corners: torch.Tensor, canvas: int) -> torch.Tensor:
    """Objects (N, C, h, w) uint8 resized to `sides` (N,) pixels and pasted at `corners` (N, 2) (row, col) on
    zero canvases (N, C, canvas, canvas)."""
    n, c = objects.shape[:2]
    out = torch.zeros(n, c, canvas, canvas, dtype=torch.uint8)
    for i, (resized, (r, col)) in enumerate(zip(resize_objects(objects, sides), corners.tolist(), strict=True)):
        side = resized.shape[-1]
        out[i, :, r : r + side, col : col + side] = resized
    return out


def make_multiscale(
    base: InMemoryImages,
    canvas: int = CANVAS,
    scale_range: tuple[float, float] = SCALE_RANGE,
    seed: int = 0,
    object_size: int | None = None,
    stats: tuple[tuple[float, ...], tuple[float, ...]] = (MULTISCALE_MEAN, MULTISCALE_STD),
) -> InMemoryImages:
    """Every image of `base` at a random scale in `scale_range` and a random position on the canvas.

    `object_size`: the object's side at scale 1 (default: the images' own); `stats`: the (mean, std) the
    images are normalised with."""
    lo, hi = scale_range
    size = base.images.shape[-1] if object_size is None else object_size
    if not 0 < lo <= hi or round(size * hi) > canvas:
        raise ValueError(f"scale_range {scale_range} does not fit {size}-pixel objects on a {canvas} canvas")
    gen = torch.Generator().manual_seed(seed)
    n = len(base)
    scales = lo + (hi - lo) * torch.rand(n, generator=gen)
    sides = (scales * size).round().long()
    corners = (torch.rand(n, 2, generator=gen) * (canvas - sides + 1)[:, None]).long()
    images = paste_objects(base.images, sides, corners, canvas)
    return InMemoryImages(images, base.labels, base.classes, *stats)


def centered_canvas(
    base: InMemoryImages,
    canvas: int = CANVAS,
    object_size: int | None = None,
    stats: tuple[tuple[float, ...], tuple[float, ...]] = (MULTISCALE_MEAN, MULTISCALE_STD),
) -> InMemoryImages:
    """Every image of `base` at scale 1 (`object_size` pixels, default: its own size) in the canvas centre."""
    objects = base.images
    if object_size is not None and object_size != objects.shape[-1]:
        objects = F.interpolate(objects.float(), size=(object_size, object_size), mode="bilinear", antialias=True)
        objects = objects.round().clamp(0, 255).to(torch.uint8)
    h, w = objects.shape[-2:]
    top, left = (canvas - h) // 2, (canvas - w) // 2
    images = F.pad(objects, (left, canvas - w - left, top, canvas - h - top))
    return InMemoryImages(images.contiguous(), base.labels, base.classes, *stats)
