"""Normalisation layers as an option (`norm_layer`), and what each one is to the SK layer's accelerators.

`norm_layer` is what torchvision's and timm's builders take: a class or callable ``f(num_channels) →
module`` (``nn.BatchNorm2d``, ``torchvision.ops.FrozenBatchNorm2d``, ``nn.SyncBatchNorm``,
``functools.partial(nn.GroupNorm, 32)``), or one of the names in :data:`NORM_LAYERS` (timm's names are
accepted as aliases). Known classes are kept as their name, so that a model's options stay plain values
(weights files record them as JSON).

:func:`norm_kind` says what a norm module computes right now, which is all the fast SK tails need to know:
statistics of the batch (a BatchNorm in training), or a fixed per-channel affine map (a frozen BatchNorm, a
BatchNorm in evaluation, a norm folded into its convolution), or anything else (GroupNorm, SyncBatchNorm in
training: only the plain forward computes those).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from sknet.enums import TextEnum
from sknet.errors import ConfigError

GROUPS = 32  # GroupNorm's group count (Wu & He 2018; timm's and detectron2's default)


class GroupNorm(nn.GroupNorm):
    """GroupNorm taking the channel count first, as every other `norm_layer` does: `num_groups` (default 32)
    lowered to the largest divisor of `num_channels` that is not above it (e.g. 8 for 24 channels)."""

    def __init__(self, num_channels: int, num_groups: int = GROUPS, eps: float = 1e-5, affine: bool = True):
        super().__init__(math.gcd(num_channels, num_groups), num_channels, eps, affine)


NormLayer = Callable[[int], nn.Module]
# The names `norm_layer` takes, and what each builds; aliases (timm's among them) in _ALIASES.
NORM_LAYERS: dict[str, NormLayer] = {
    "batchnorm": nn.BatchNorm2d,
    "frozen": FrozenBatchNorm2d,
    "syncbn": nn.SyncBatchNorm,
    "groupnorm": GroupNorm,
}
_ALIASES = {
    "bn": "batchnorm",
    "batchnorm2d": "batchnorm",
    "frozenbn": "frozen",
    "frozenbatchnorm": "frozen",
    "frozenbatchnorm2d": "frozen",
    "syncbatchnorm": "syncbn",
    "gn": "groupnorm",
}
DEFAULT_NORM = "batchnorm"


def norm_name(spec: object) -> str | NormLayer:
    """`spec` as a `norm_layer` option value: None → "batchnorm"; a name or alias → its name; one of the
    classes of :data:`NORM_LAYERS` → its name; any other callable as given. ConfigError otherwise."""
    if spec is None:
        return DEFAULT_NORM
    if isinstance(spec, str):
        key = spec.replace("_", "").replace("-", "").lower()
        key = _ALIASES.get(key, key)
        if key not in NORM_LAYERS:
            raise ConfigError(f"norm_layer {spec!r} is not a known norm: use one of {', '.join(NORM_LAYERS)}")
        return key
    for name, layer in NORM_LAYERS.items():
        if spec is layer:
            return name
    if isinstance(spec, type) and not issubclass(spec, nn.Module):
        raise ConfigError(f"norm_layer {spec.__name__} is not a torch.nn.Module class")
    if not callable(spec):
        raise ConfigError(f"norm_layer must be a name ({', '.join(NORM_LAYERS)}) or a callable, got {spec!r}")
    return spec  # type: ignore[return-value]


def make_norm(spec: object, channels: int) -> nn.Module:
    """The norm module `spec` (see :func:`norm_name`) builds for `channels` channels."""
    spec = norm_name(spec)
    layer = NORM_LAYERS[spec] if isinstance(spec, str) else spec
    module = layer(channels)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"norm_layer {spec!r} returned {type(module).__name__}, not a torch.nn.Module")
    return module


def make_descriptor_norm(spec: object, channels: int) -> nn.Module:
    """The norm of a (N, C, 1, 1) descriptor (the SK fuse step). A GroupNorm of G groups would normalise
    C/G values per group there (one at C = G = 32, which makes its output a constant), so a GroupNorm
    takes one group (statistics over all C channels of the sample); any other norm is `make_norm`'s."""
    module = make_norm(spec, channels)
    if isinstance(module, nn.GroupNorm) and module.num_groups > 1:
        return nn.GroupNorm(1, channels, module.eps, module.affine)
    return module


class NormKind(TextEnum):
    """What a norm module computes in its current mode, as the fast SK tails see it."""

    BATCH = "batch"  # nn.BatchNorm2d in training: the batch's statistics (its running ones updated)
    AFFINE = "affine"  # a fixed per-channel map: frozen BN, a BatchNorm in eval mode, nn.Identity (BN folded)
    OTHER = "other"  # anything else (GroupNorm, SyncBatchNorm in training, ...): the plain forward only


def norm_kind(module: nn.Module) -> NormKind:
    """The :class:`NormKind` of `module` now (it changes with ``train()``/``eval()``). Exact classes: a
    subclass may compute something else, so it counts as OTHER."""
    kind = type(module)
    if kind is nn.Identity or kind is FrozenBatchNorm2d:
        return NormKind.AFFINE
    if kind in (nn.BatchNorm2d, nn.SyncBatchNorm) and module.track_running_stats:
        if not module.training:
            return NormKind.AFFINE
        if kind is nn.BatchNorm2d and module.affine:
            return NormKind.BATCH
    return NormKind.OTHER


def affine_terms(module: nn.Module, channels: int, dtype: torch.dtype, device: torch.device):
    """(mean, 1/σ, γ, β), each (C,), of an AFFINE norm: y = (x − mean)·(1/σ)·γ + β. Mean and 1/σ in `dtype`;
    γ and β are the module's own tensors where it has them (so that gradients reach them), else ones/zeros."""
    if type(module) is nn.Identity:
        zero = torch.zeros(channels, device=device, dtype=dtype)
        return zero, zero + 1, zero + 1, zero
    mean = module.running_mean.to(dtype)
    invstd = torch.rsqrt(module.running_var.to(dtype) + module.eps)
    gamma = module.weight if module.weight is not None else torch.ones_like(mean)
    beta = module.bias if module.bias is not None else torch.zeros_like(mean)
    return mean, invstd, gamma, beta
