"""ShuffleNetV2 (Ma et al., ECCV 2018) plain, with SE, and with SK (paper Table 4).

The unit's 3×3 depthwise conv is the pluggable middle: plain (depthwise conv + BN), or an SK convolution
with groups = channels (both paths depthwise, 3×3 and 3×3 dilation 2). SE sits on the main branch's
output, before the concatenation. (N, 3, 224, 224) → logits (N, num_classes).
"""

from __future__ import annotations

import torch
from torch import nn

from sknet.layers import Aggregation, BlockConfig, ConvBNAct, Middle
from sknet.layers.squeeze_excite import SqueezeExcite
from sknet.models.base import NETWORK_OPTIONS, SK_FIELDS, BottleneckNet, build_block_config
from sknet.models.registry import register_model

# Output channels of stages 2–4 and of conv5, per width multiplier (ShuffleNetV2 paper Table 5).
STAGE_CHANNELS = {0.5: (48, 96, 192), 1.0: (116, 232, 464), 1.5: (176, 352, 704), 2.0: (244, 488, 976)}
STAGE_UNITS = (4, 8, 4)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(N, C, H, W) → the same with channel g·(C/groups) + j moved to j·groups + g; no shapes read, so
    FX symbolic tracing sees the same ops."""
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


def depthwise_middle(channels: int, stride: int, block: BlockConfig) -> nn.Module:
    """The 3×3 depthwise conv of a unit: plain (conv + BN, no ReLU, as ShuffleNetV2) or SK (groups = C)."""
    return block.make_middle(channels, stride, groups=channels, act_layer=None)


class ShuffleUnit(nn.Module):
    """(N, in_channels, H, W) → (N, out_channels, H/stride, W/stride).

    stride 1: split the channels in two, transform one half, concatenate, shuffle.
    stride 2: both branches see the whole input and down-sample (each with its depthwise middle).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, block: BlockConfig) -> None:
        super().__init__()
        self.stride = stride
        half = out_channels // 2
        branch_in = in_channels if stride > 1 else in_channels // 2
        norm = block.norm_layer
        if stride > 1:
            self.branch1 = nn.Sequential(
                depthwise_middle(in_channels, stride, block), ConvBNAct(in_channels, half, 1, norm_layer=norm)
            )
        else:
            self.branch1 = None
        self.branch2 = nn.Sequential(
            ConvBNAct(branch_in, half, 1, norm_layer=norm),
            depthwise_middle(half, stride, block),
            ConvBNAct(half, half, 1, norm_layer=norm),
        )
        self.se = SqueezeExcite(half, block.se_reduction) if block.se_reduction else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch1 is None:
            left, right = x.chunk(2, dim=1)
        else:
            left, right = self.branch1(x), x
        right = self.branch2(right)
        if self.se is not None:
            right = self.se(right)
        return channel_shuffle(torch.cat([left, right], dim=1), 2)


class ShuffleNetV2(BottleneckNet):
    """Stem 3×3/2 (24) + max pool/2 → stages 2–4 of shuffle units → conv5 1×1 (1024) → pool → fc."""

    first_stage_index = 2

    def __init__(
        self,
        width_mult: float,
        block: BlockConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        frozen_stages: int = -1,
        norm_eval: bool = False,
    ) -> None:
        super().__init__(num_classes, in_chans, drop_rate, 0.0, global_pool, frozen_stages, norm_eval, len(STAGE_UNITS))
        self.block_config = block
        norm = block.norm_layer
        channels = STAGE_CHANNELS[width_mult]
        self.stem = nn.Sequential()
        self.stem.add_module("conv", ConvBNAct(in_chans, 24, 3, stride=2, norm_layer=norm))
        self.stem.add_module("pool", nn.MaxPool2d(3, 2, padding=1))
        self.add_stem_feature(24, 2)
        in_channels, reduction = 24, 4
        for units, out_channels in zip(STAGE_UNITS, channels, strict=True):
            reduction *= 2
            stage = nn.Sequential(
                *[
                    ShuffleUnit(in_channels if u == 0 else out_channels, out_channels, 2 if u == 0 else 1, block)
                    for u in range(units)
                ]
            )
            self.add_stage(stage, out_channels, reduction)
            in_channels = out_channels
        self.head_conv = ConvBNAct(in_channels, 1024, 1, norm_layer=norm)
        self.build_head(1024, zero_init_last_bn=False)


LIGHT_OPTIONS = NETWORK_OPTIONS
LIGHT_SE_OPTIONS = (*LIGHT_OPTIONS, "se_reduction")
LIGHT_SK_OPTIONS = (*LIGHT_OPTIONS, *SK_FIELDS)


def build_shufflenet(width_mult: float, block: BlockConfig, **kwargs: object) -> ShuffleNetV2:
    block, kwargs = build_block_config(block, kwargs)
    return ShuffleNetV2(width_mult, block, **kwargs)


SK_BLOCK = BlockConfig(middle=Middle.SK, aggregation=Aggregation.SK)
SE_BLOCK = BlockConfig(se_reduction=16)


@register_model("lightweight", LIGHT_OPTIONS)
def shufflenetv2_050(**kwargs: object) -> ShuffleNetV2:
    """ShuffleNetV2 0.5×."""
    return build_shufflenet(0.5, BlockConfig(), **kwargs)


@register_model("lightweight", LIGHT_SE_OPTIONS)
def shufflenetv2_050_se(**kwargs: object) -> ShuffleNetV2:
    """ShuffleNetV2 0.5× + SE (r = 16) on each unit's main branch."""
    return build_shufflenet(0.5, SE_BLOCK, **kwargs)


@register_model("lightweight", LIGHT_SK_OPTIONS)
def shufflenetv2_050_sk(**kwargs: object) -> ShuffleNetV2:
    """ShuffleNetV2 0.5× + SK: every 3×3 depthwise conv becomes a depthwise SK convolution."""
    return build_shufflenet(0.5, SK_BLOCK, **kwargs)


@register_model("lightweight", LIGHT_OPTIONS)
def shufflenetv2_100(**kwargs: object) -> ShuffleNetV2:
    """ShuffleNetV2 1.0×."""
    return build_shufflenet(1.0, BlockConfig(), **kwargs)


@register_model("lightweight", LIGHT_SE_OPTIONS)
def shufflenetv2_100_se(**kwargs: object) -> ShuffleNetV2:
    """ShuffleNetV2 1.0× + SE (r = 16) on each unit's main branch."""
    return build_shufflenet(1.0, SE_BLOCK, **kwargs)


@register_model("lightweight", LIGHT_SK_OPTIONS)
def shufflenetv2_100_sk(**kwargs: object) -> ShuffleNetV2:
    """ShuffleNetV2 1.0× + SK: every 3×3 depthwise conv becomes a depthwise SK convolution."""
    return build_shufflenet(1.0, SK_BLOCK, **kwargs)
