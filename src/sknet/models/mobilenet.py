"""MobileNetV2 (Sandler et al., CVPR 2018) plain, with SE and with SK — beyond the paper, same recipe.

The inverted residual's 3×3 depthwise conv is the pluggable middle: plain (conv + BN + ReLU6) or a
depthwise SK convolution (groups = channels; its paths use ReLU, as every SK path). SE (r = 4 of the
expanded width, as MobileNetV3) follows the depthwise stage. (N, 3, 224, 224) → logits (N, num_classes).
"""

from __future__ import annotations

import torch
from torch import nn

from sknet.layers import BlockConfig, ConvBNAct, Middle
from sknet.layers.helpers import make_divisible
from sknet.layers.squeeze_excite import SqueezeExcite
from sknet.models.base import NETWORK_OPTIONS, SK_FIELDS, BottleneckNet, build_block_config
from sknet.models.registry import register_model

# (expansion t, output channels c, units n, first stride s) per stage, MobileNetV2 Table 2.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidual(nn.Module):
    """(N, in_channels, H, W) → (N, out_channels, H/stride, W/stride); residual when shapes agree."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int, block: BlockConfig):
        super().__init__()
        hidden = in_channels * expansion
        norm = block.norm_layer
        if expansion != 1:
            self.expand = ConvBNAct(in_channels, hidden, 1, act_layer=nn.ReLU6, norm_layer=norm)
        else:
            self.expand = nn.Identity()
        self.depthwise = block.make_middle(hidden, stride, groups=hidden, act_layer=nn.ReLU6)
        self.se = SqueezeExcite(hidden, block.se_reduction) if block.se_reduction else None
        self.project = ConvBNAct(hidden, out_channels, 1, act=False, norm_layer=norm)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.depthwise(self.expand(x))
        if self.se is not None:
            out = self.se(out)
        out = self.project(out)
        return x + out if self.use_residual else out


class MobileNetV2(BottleneckNet):
    """Stem 3×3/2 → 7 stages of inverted residuals → 1×1 conv (1280) → pool → dropout → fc.

    ``feature_info``: the last stage of each resolution (stages 1, 2, 3, 5, 7: reductions 2 to 32), as timm's
    MobileNetV2."""

    first_stage_index = 2

    def __init__(
        self,
        block: BlockConfig,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        global_pool: str = "avg",
        frozen_stages: int = -1,
        norm_eval: bool = False,
    ) -> None:
        super().__init__(num_classes, in_chans, drop_rate, 0.0, global_pool, frozen_stages, norm_eval, len(SETTINGS))
        self.block_config = block
        norm = block.norm_layer
        in_channels = make_divisible(32 * width_mult)
        self.stem = nn.Sequential()
        self.stem.add_module("conv", ConvBNAct(in_chans, in_channels, 3, stride=2, act_layer=nn.ReLU6, norm_layer=norm))
        reduction = 2
        for i, (t, c, n, s) in enumerate(SETTINGS):
            out_channels = make_divisible(c * width_mult)
            reduction *= s
            last_at_this_size = i + 1 == len(SETTINGS) or SETTINGS[i + 1][3] > 1
            stage = nn.Sequential(
                *[
                    InvertedResidual(
                        in_channels if u == 0 else out_channels, out_channels, s if u == 0 else 1, t, block
                    )
                    for u in range(n)
                ]
            )
            self.add_stage(stage, out_channels, reduction, feature=last_at_this_size)
            in_channels = out_channels
        last = make_divisible(1280 * max(1.0, width_mult))
        self.head_conv = ConvBNAct(in_channels, last, 1, act_layer=nn.ReLU6, norm_layer=norm)
        self.build_head(last, zero_init_last_bn=False)


MOBILE_OPTIONS = (*NETWORK_OPTIONS, "width_mult")


def build_mobilenet(block: BlockConfig, **kwargs: object) -> MobileNetV2:
    block, kwargs = build_block_config(block, kwargs)
    return MobileNetV2(block, **kwargs)


@register_model("lightweight", MOBILE_OPTIONS)
def mobilenetv2_100(**kwargs: object) -> MobileNetV2:
    """MobileNetV2 1.0×: 3.5M parameters, 300M MACs."""
    return build_mobilenet(BlockConfig(), **kwargs)


@register_model("lightweight", (*MOBILE_OPTIONS, "se_reduction"))
def mobilenetv2_100_se(**kwargs: object) -> MobileNetV2:
    """MobileNetV2 1.0× + SE (r = 4) after each depthwise stage."""
    return build_mobilenet(BlockConfig(se_reduction=4), **kwargs)


@register_model("lightweight", (*MOBILE_OPTIONS, *SK_FIELDS))
def mobilenetv2_100_sk(**kwargs: object) -> MobileNetV2:
    """MobileNetV2 1.0× + SK: every 3×3 depthwise conv becomes a depthwise SK convolution."""
    return build_mobilenet(BlockConfig(middle=Middle.SK), **kwargs)
