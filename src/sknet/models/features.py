"""Backbone view of a classification network: the stage outputs (C2–C5 of a ResNeXt) for detection or
segmentation heads, e.g. torchvision's FeaturePyramidNetwork."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sknet.errors import ConfigError
from sknet.layers.checks import check_image_batch
from sknet.models.base import NOT_SCRIPTABLE, BottleneckNet
from sknet.models.pretrained_cfg import pretrained_cfg


class FeatureInfo(list):
    """The outputs' descriptions (dicts with num_chs, reduction, module), with timm's accessors."""

    def channels(self) -> list[int]:
        return [int(info["num_chs"]) for info in self]

    def reduction(self) -> list[int]:
        return [int(info["reduction"]) for info in self]


class FeatureExtractor(nn.Module):
    """(N, in_chans, H, W) → [stage outputs at `out_indices`], stage i shaped (N, channels[i], H/r_i, W/r_i).

    Shares the stem and stages of `model` (state-dict keys unchanged, so classification weights load);
    the classifier is dropped. ``channels``, ``reductions`` and ``names`` describe the outputs; with
    ``OrderedDict(zip(names, outputs))`` they feed torchvision's FeaturePyramidNetwork directly.
    """

    def __init__(self, model: BottleneckNet, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        count = len(model.stage_names)
        indices = list(range(count)) if out_indices is None else [int(i) for i in out_indices]
        if not indices or any(not -count <= i < count for i in indices):
            raise ConfigError(f"out_indices {out_indices!r} must index the {count} stages (0..{count - 1})")
        indices = sorted({i % count for i in indices})
        self.in_chans = model.in_chans
        self.stem = model.stem
        self.stage_names = list(model.stage_names[: indices[-1] + 1])  # later stages are not needed
        for name in self.stage_names:
            self.add_module(name, getattr(model, name))
        self.out_indices = indices
        self.feature_info = FeatureInfo(dict(model.feature_info[i]) for i in indices)
        first = getattr(model, "first_stage_index", 2)
        self.names = [f"C{first + i}" for i in indices]

    def __prepare_scriptable__(self) -> nn.Module:
        raise ConfigError(NOT_SCRIPTABLE)

    @property
    def pretrained_cfg(self) -> dict[str, object]:
        """timm's pretrained_cfg (the model's preprocessing; no classifier), as timm's features_only models."""
        return {**pretrained_cfg(self), "num_classes": 0, "classifier": None}

    default_cfg = pretrained_cfg

    @property
    def channels(self) -> list[int]:
        return self.feature_info.channels()

    @property
    def reductions(self) -> list[int]:
        return self.feature_info.reduction()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_image_batch(x, self.in_chans, type(self).__name__)
        x = self.stem(x)
        out = []
        for i, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                out.append(x)
        return out
