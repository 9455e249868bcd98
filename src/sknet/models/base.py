"""What every sknet classification network shares: option checks, head, initialisation, forward.

A family builds ``self.stem`` and its stages (named in ``self.stage_names``), then calls
:meth:`BottleneckNet.build_head`. (N, in_chans, H, W) → logits (N, num_classes).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from sknet.errors import ConfigError
from sknet.layers import BlockConfig, Bottleneck
from sknet.layers.checks import check_image_batch, check_positive_int


def init_weights(model: nn.Module, classifier_std: float = 0.01) -> None:
    """MSRA init for convs, BN to identity, classifier N(0, std²) with zero bias (paper section 4.1)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, classifier_std)
            nn.init.zeros_(module.bias)


# Builder options that belong to the bottleneck (BlockConfig) rather than to the network.
BLOCK_FIELDS = ("groups", "branches", "reduction", "min_dim", "aggregation", "se_reduction")


def build_block_config(block: BlockConfig, kwargs: dict[str, object]) -> tuple[BlockConfig, dict[str, object]]:
    """Split builder `kwargs` into bottleneck fields (applied to `block`) and network options."""
    network = dict(kwargs)
    changes = {k: network.pop(k) for k in BLOCK_FIELDS if k in network}
    return block.replace(**changes), network


class BottleneckNet(nn.Module):
    """Base of every family: ResNeXt / SENet / SKNet, CIFAR, ShuffleNetV2, MobileNetV2."""

    stem: nn.Module
    stage_names: list[str]
    head_conv: nn.Module | None

    def __init__(self, num_classes: int, in_chans: int, drop_rate: float) -> None:
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        if isinstance(drop_rate, bool) or not isinstance(drop_rate, (int, float)) or not 0.0 <= drop_rate < 1.0:
            raise ConfigError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = float(drop_rate)
        self.stage_names = []
        self.head_conv = None  # a last 1×1 conv before pooling (ShuffleNetV2 conv5, MobileNetV2)
        self.feature_info: list[dict[str, object]] = []

    def add_stage(self, stage: nn.Sequential, out_channels: int, reduction: int) -> None:
        name = f"layer{len(self.stage_names) + 1}"
        self.add_module(name, stage)
        self.stage_names.append(name)
        self.feature_info.append({"num_chs": out_channels, "reduction": reduction, "module": name})

    def build_head(self, in_channels: int, zero_init_last_bn: bool) -> None:
        """Global pool → dropout → fc, then initialise every weight."""
        self.num_features = in_channels
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(self.drop_rate) if self.drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, self.num_classes)
        init_weights(self)
        if zero_init_last_bn:
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    module.zero_init_last_bn()

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier for `num_classes` (fine-tuning; timm's name for it). The
        class names recorded in ``data_config`` no longer apply and are dropped."""
        check_positive_int("num_classes", num_classes)
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes).to(self.fc.weight.device, self.fc.weight.dtype)
        init_weights(self.fc)
        record = getattr(self, "data_config", None)
        if record is not None and record.classes is not None:
            self.data_config = dataclasses.replace(record, classes=None)

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, name) for name in self.stage_names]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) → the last stage's feature map."""
        check_image_batch(x, self.in_chans, type(self).__name__)
        x = self.stem(x)
        for stage in self.stages():
            x = stage(x)
        if self.head_conv is not None:
            x = self.head_conv(x)
        return x

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, in_chans, H, W) → every stage's output (C2–C5 for the ImageNet ResNeXts), see feature_info."""
        check_image_batch(x, self.in_chans, type(self).__name__)
        x = self.stem(x)
        outputs = []
        for stage in self.stages():
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.global_pool(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
