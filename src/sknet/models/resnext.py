"""ImageNet ResNeXt, SENet and SKNet (26/50/101 layers) from one network and one pluggable bottleneck.

Stage layout (paper Table 1, 224×224 input): stem 7×7/2 + 3×3 max pool/2 → 56×56; four stages of
bottlenecks with widths G·w·(1, 2, 4, 8) and outputs 256·(1, 2, 4, 8) at strides 4, 8, 16, 32; global
average pool and a fully connected classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from sknet.enums import TextEnum
from sknet.errors import ConfigError
from sknet.layers import BlockConfig, Bottleneck, ConvBNAct, Middle
from sknet.layers.checks import check_positive_int
from sknet.models.base import NETWORK_OPTIONS, SK_FIELDS, BottleneckNet, build_block_config, stage_strides
from sknet.models.registry import register_model


class StemPool(TextEnum):
    """The stem's 3×3/2 max pool: PyTorch zoos pad by 1; the authors' Caffe model uses ceil mode."""

    PYTORCH = "pytorch"
    CAFFE = "caffe"


class ResNeXt(BottleneckNet):
    """ResNeXt-style network; the bottleneck middle decides ResNeXt, SENet or SKNet.

    (N, in_chans, H, W) → logits (N, num_classes). ``forward_features`` gives (N, 2048, H/32, W/32).

    Args:
        layers: bottlenecks per stage, e.g. (3, 4, 6, 3) for the 50-layer models.
        block: the bottleneck configuration shared by every unit.
        width_per_group: w of "32×4d"; stage i middle width is groups · w · 2^i.
        stem_pool: "pytorch" (padded max pool) or "caffe" (ceil mode, as the authors' models).
        attn_dims: per-stage (conv2..conv5) SK d overriding max(C/r, L) (None keeps the formula); the
            authors' released SKNet-101 uses (None, 16, None, None).
        zero_init_last_bn: start every residual branch at zero.
        drop_path_rate: stochastic depth of the last bottleneck, linear over depth from 0 (training only).
        output_stride: 32 (the paper's), 16 or 8: the last stages dilate their 3×3s instead of striding
            (torchvision's ``replace_stride_with_dilation``, timm's ``output_stride``), the feature maps of
            DeepLab-style segmentation; an SK unit multiplies its paths' dilations (see SKConv2d).
        global_pool, frozen_stages, norm_eval: see :class:`~sknet.models.base.BottleneckNet`.
    """

    def __init__(
        self,
        layers: Sequence[int],
        block: BlockConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_per_group: int = 4,
        drop_rate: float = 0.0,
        zero_init_last_bn: bool = False,
        stem_pool: str | StemPool = StemPool.PYTORCH,
        attn_dims: Sequence[int | None] | None = None,
        drop_path_rate: float = 0.0,
        output_stride: int = 32,
        global_pool: str = "avg",
        frozen_stages: int = -1,
        norm_eval: bool = False,
    ) -> None:
        super().__init__(
            num_classes, in_chans, drop_rate, drop_path_rate, global_pool, frozen_stages, norm_eval, len(layers)
        )
        layers = tuple(layers)
        if len(layers) != 4:
            raise ConfigError(f"layers must give 4 stages, got {layers!r}")
        for n in layers:
            check_positive_int("units per stage", n)
        check_positive_int("width_per_group", width_per_group)
        attn_dims = tuple(attn_dims) if attn_dims is not None else (None,) * 4
        if len(attn_dims) != 4:
            raise ConfigError(f"attn_dims must give 4 entries (one per stage), got {attn_dims!r}")
        if block.middle is not Middle.SK and any(d is not None for d in attn_dims):
            raise ConfigError("attn_dims applies to SK models only")
        stem_pool = StemPool.parse(stem_pool)

        self.block_config = block
        self.stem = nn.Sequential()
        self.stem.add_module("conv", ConvBNAct(in_chans, 64, 7, stride=2, norm_layer=block.norm_layer))
        if stem_pool is StemPool.CAFFE:
            self.stem.add_module("pool", nn.MaxPool2d(3, 2, padding=0, ceil_mode=True))
        else:
            self.stem.add_module("pool", nn.MaxPool2d(3, 2, padding=1))
        self.add_stem_feature(64, 2)

        in_channels, index = 64, 0
        plan = stage_strides((1, 2, 2, 2), output_stride, stem_stride=4)
        for i, (units, attn_dim, (stride, dilation, first_dilation, reduction)) in enumerate(
            zip(layers, attn_dims, plan, strict=True)
        ):
            width = block.groups * width_per_group * 2**i
            out_channels = 256 * 2**i
            stage = nn.Sequential(
                *[
                    Bottleneck(
                        in_channels if u == 0 else out_channels,
                        width,
                        out_channels,
                        stride=stride if u == 0 else 1,
                        config=block,
                        attn_dim=attn_dim,
                        drop_path=self.block_drop_path(index + u, sum(layers)),
                        dilation=first_dilation if u == 0 else dilation,
                    )
                    for u in range(units)
                ]
            )
            index += units
            self.add_stage(stage, out_channels, reduction)
            in_channels = out_channels
        self.build_head(in_channels, zero_init_last_bn)


# ---------------------------------------------------------------------------------------------------------
# Builders. Every option named in the register_model call can be overridden through create_model.

COMMON_OPTIONS = (
    *NETWORK_OPTIONS,
    "drop_path_rate",
    "zero_init_last_bn",
    "stem_pool",
    "groups",
    "width_per_group",
    "output_stride",
)
SK_OPTIONS = (*COMMON_OPTIONS, *SK_FIELDS, "attn_dims")
SE_OPTIONS = (*COMMON_OPTIONS, "se_reduction")

DEPTHS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def build_resnext(layers: Sequence[int], block: BlockConfig, **kwargs: object) -> ResNeXt:
    block, kwargs = build_block_config(block, kwargs)
    return ResNeXt(layers, block, **kwargs)


SK_BLOCK = BlockConfig(middle=Middle.SK)
SE_BLOCK = BlockConfig(se_reduction=16)
PLAIN_BLOCK = BlockConfig()


@register_model("imagenet", SK_OPTIONS)
def sknet26(**kwargs: object) -> ResNeXt:
    """SKNet-26: SK[M=2, G=32, r=16] units {2, 2, 2, 2}."""
    return build_resnext(DEPTHS[26], SK_BLOCK, **kwargs)


@register_model("imagenet", SK_OPTIONS)
def sknet50(**kwargs: object) -> ResNeXt:
    """SKNet-50 (paper Table 1): 27.5M parameters, 4.47 GMACs."""
    return build_resnext(DEPTHS[50], SK_BLOCK, **kwargs)


@register_model("imagenet", SK_OPTIONS)
def sknet101(**kwargs: object) -> ResNeXt:
    """SKNet-101: units {3, 4, 23, 3}, 48.9M parameters, 8.46 GMACs."""
    return build_resnext(DEPTHS[101], SK_BLOCK, **kwargs)


@register_model("imagenet", COMMON_OPTIONS)
def resnext26(**kwargs: object) -> ResNeXt:
    """ResNeXt-26 32×4d."""
    return build_resnext(DEPTHS[26], PLAIN_BLOCK, **kwargs)


@register_model("imagenet", COMMON_OPTIONS)
def resnext50(**kwargs: object) -> ResNeXt:
    """ResNeXt-50 32×4d: 25.0M parameters, 4.24 GMACs."""
    return build_resnext(DEPTHS[50], PLAIN_BLOCK, **kwargs)


@register_model("imagenet", COMMON_OPTIONS)
def resnext101(**kwargs: object) -> ResNeXt:
    """ResNeXt-101 32×4d: 44.3M parameters, 7.99 GMACs."""
    return build_resnext(DEPTHS[101], PLAIN_BLOCK, **kwargs)


@register_model("imagenet", SE_OPTIONS)
def senet26(**kwargs: object) -> ResNeXt:
    """SENet-26: SE-ResNeXt-26 32×4d, SE reduction 16."""
    return build_resnext(DEPTHS[26], SE_BLOCK, **kwargs)


@register_model("imagenet", SE_OPTIONS)
def senet50(**kwargs: object) -> ResNeXt:
    """SENet-50: SE-ResNeXt-50 32×4d, 27.7M parameters, 4.25 GMACs."""
    return build_resnext(DEPTHS[50], SE_BLOCK, **kwargs)


@register_model("imagenet", SE_OPTIONS)
def senet101(**kwargs: object) -> ResNeXt:
    """SENet-101: SE-ResNeXt-101 32×4d, 49.2M parameters, 8.00 GMACs."""
    return build_resnext(DEPTHS[101], SE_BLOCK, **kwargs)
