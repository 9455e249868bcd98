"""Backbone view of a classification network, as timm's ``features_only``: the feature maps of the stem and the
stages for detection or segmentation heads (torchvision's FeaturePyramidNetwork, timm-based libraries)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sknet.errors import ConfigError
from sknet.layers.checks import check_image_batch
from sknet.models.base import (
    NOT_SCRIPTABLE,
    STEM_FEATURE,
    BottleneckNet,
    check_batch,
    run_features,
    take_indices,
    weights_dtype,
)
from sknet.models.pretrained_cfg import data_config_from_pretrained_cfg, pretrained_cfg


class FeatureInfo(list):
    """The outputs' descriptions (dicts with num_chs, reduction, module), with timm's accessors."""

    def channels(self, idx: int | None = None) -> list[int] | int:
        values = [int(info["num_chs"]) for info in self]
        return values if idx is None else values[idx]

    def reduction(self, idx: int | None = None) -> list[int] | int:
        values = [int(info["reduction"]) for info in self]
        return values if idx is None else values[idx]

    def module_name(self, idx: int | None = None) -> list[str] | str:
        values = [str(info["module"]) for info in self]
        return values if idx is None else values[idx]


class FeatureExtractor(nn.Module):
    """(N, in_chans, H, W) → [feature maps at `out_indices`], map i shaped (N, channels[i], H/r_i, W/r_i).

    `out_indices` index the model's ``feature_info`` with timm's meaning: 0 the stem where the family lists
    it (the ResNeXts', as timm's ResNets: 64 channels at 1/2), then the stages; None all, an int n the last n.
    Shares the stem and stages of `model` under the same names (state-dict keys unchanged, so classification
    weights load); the stages after the last level asked for, the head and the classifier are dropped.
    ``channels``, ``reductions`` and ``names`` describe the outputs (``names``: "C<level + 1>" — for the
    ResNeXts C1 the stem at 1/2, C2…C5 the stages at 1/4…1/32); ``OrderedDict(zip(names, outputs))`` feeds
    torchvision's FeaturePyramidNetwork. A batch of one in training is refused where an SK layer's fuse step
    normalises over the batch (as the model's own forward).
    """

    def __init__(self, model: BottleneckNet, out_indices: int | Sequence[int] | None = None) -> None:
        super().__init__()
        take = take_indices(out_indices, len(model.feature_info), "out_indices")
        self.in_chans = model.in_chans
        self.feature_info = FeatureInfo(dict(model.feature_info[i]) for i in take)
        self.out_indices = take
        last = self.feature_info[-1]["module"]
        self.stem = model.stem
        keep = 0 if last == STEM_FEATURE else model.stage_names.index(last) + 1
        self.stage_names = list(model.stage_names[:keep])  # later stages are not needed
        for name in self.stage_names:
            self.add_module(name, getattr(model, name))
        self.names = [f"C{i + 1}" for i in take]
        if hasattr(model, "data_config"):
            self.data_config = model.data_config
        self.weights_meta = getattr(model, "weights_meta", {})

    def __prepare_scriptable__(self) -> nn.Module:
        raise ConfigError(NOT_SCRIPTABLE)

    @property
    def pretrained_cfg(self) -> dict[str, object]:
        """timm's pretrained_cfg (the model's preprocessing; no classifier), as timm's features_only models."""
        return {**pretrained_cfg(self), "num_classes": 0, "classifier": None}

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: dict[str, object]) -> None:
        self.data_config = data_config_from_pretrained_cfg(cfg, self.in_chans)

    default_cfg = pretrained_cfg

    @property
    def channels(self) -> list[int]:
        return self.feature_info.channels()

    @property
    def reductions(self) -> list[int]:
        return self.feature_info.reduction()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_image_batch(x, self.in_chans, type(self).__name__, weights_dtype(self))
        check_batch(self, x)
        stages = [(name, getattr(self, name)) for name in self.stage_names]
        wanted = set(self.feature_info.module_name())
        return run_features(self.stem, stages, x, wanted, self.feature_info[-1]["module"])[1]
