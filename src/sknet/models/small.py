"""Small-image ResNeXt / SKNet: a full-resolution 3×3 stem, then stages of bottlenecks.

The same network serves the compact models for 28×28 grayscale (the main job's `sknet_tiny`) and, with
other stage settings, the CIFAR ResNeXt-29 family. (N, in_chans, H, W) → logits (N, num_classes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from torch import nn

from sknet.errors import ConfigError
from sknet.layers import BlockConfig, Bottleneck, ConvBNAct, Middle
from sknet.layers.checks import check_positive_int
from sknet.models.base import NETWORK_OPTIONS, SK_FIELDS, BottleneckNet, build_block_config, stage_strides
from sknet.models.registry import register_model


@dataclass(frozen=True)
class StageSpec:
    """`units` bottlenecks of middle width `width` and output `out_channels`; the first has `stride`."""

    units: int
    width: int
    out_channels: int
    stride: int


class SmallResNeXt(BottleneckNet):
    """Stem 3×3 (stride `stem_stride`) → stages of :class:`Bottleneck` → global pool → dropout → fc.

    `output_stride` (8, 16, 32) dilates the stages that would stride past it (see ResNeXt); these networks'
    own strides (8 for the compact models, 4 for CIFAR's) are at most 8, so it changes nothing at 8 and above.
    """

    def __init__(
        self,
        stages: Sequence[StageSpec],
        block: BlockConfig,
        stem_width: int = 64,
        stem_stride: int = 1,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        zero_init_last_bn: bool = False,
        drop_path_rate: float = 0.0,
        output_stride: int = 32,
        global_pool: str = "avg",
        frozen_stages: int = -1,
        norm_eval: bool = False,
    ) -> None:
        super().__init__(
            num_classes, in_chans, drop_rate, drop_path_rate, global_pool, frozen_stages, norm_eval, len(stages)
        )
        if not stages:
            raise ConfigError("a network needs at least one stage")
        check_positive_int("stem_width", stem_width)
        check_positive_int("stem_stride", stem_stride)
        self.block_config = block
        self.stem = nn.Sequential()
        self.stem.add_module(
            "conv", ConvBNAct(in_chans, stem_width, 3, stride=stem_stride, norm_layer=block.norm_layer)
        )
        self.add_stem_feature(stem_width, stem_stride)
        in_channels, index = stem_width, 0
        total = sum(spec.units for spec in stages)
        plan = stage_strides([spec.stride for spec in stages], output_stride, stem_stride)
        for spec, (stride, dilation, first_dilation, reduction) in zip(stages, plan, strict=True):
            check_positive_int("units per stage", spec.units)
            stage = nn.Sequential(
                *[
                    Bottleneck(
                        in_channels if u == 0 else spec.out_channels,
                        spec.width,
                        spec.out_channels,
                        stride=stride if u == 0 else 1,
                        config=block,
                        drop_path=self.block_drop_path(index + u, total),
                        dilation=first_dilation if u == 0 else dilation,
                    )
                    for u in range(spec.units)
                ]
            )
            index += spec.units
            self.add_stage(stage, spec.out_channels, reduction)
            in_channels = spec.out_channels
        self.build_head(in_channels, zero_init_last_bn)


SMALL_OPTIONS = (*NETWORK_OPTIONS, "drop_path_rate", "zero_init_last_bn", "groups", "stem_stride", "output_stride")
SMALL_SK_OPTIONS = (*SMALL_OPTIONS, *SK_FIELDS)
# The compact models also take `widths`: their stages' middle widths (a twin matched in cost, see below).
TINY_OPTIONS = (*SMALL_OPTIONS, "widths")
TINY_SK_OPTIONS = (*SMALL_SK_OPTIONS, "widths")
TINY_SE_OPTIONS = (*TINY_OPTIONS, "se_reduction")

# Compact models for 28×28 grayscale: a stride-2 stem, then units at 14, 7 and 4 pixels. On CPUs a
# training step costs activation traffic more than MACs: a stride-2 stem trains faster than a full-resolution
# one with the same parameters.
TINY_STAGES = (StageSpec(1, 32, 64, 1), StageSpec(1, 64, 128, 2), StageSpec(1, 128, 256, 2))
TINY_BLOCK = BlockConfig(groups=8, min_dim=16)


def build_small(stages: Sequence[StageSpec], block: BlockConfig, stem_width: int, **kwargs: object):
    block, kwargs = build_block_config(block, kwargs)
    return SmallResNeXt(stages, block, stem_width, **kwargs)


def tiny_stages(widths: Sequence[int] | None) -> tuple[StageSpec, ...]:
    """The compact stages with other middle widths (one per stage; None: 32, 64, 128), outputs unchanged.

    ``resnext_tiny(widths=(32, 64, 176))`` is the ResNeXt twin of ``sknet_tiny`` matched in cost: 171,506
    parameters and 5.862 MMACs against 171,954 and 5.859 (the closest of all widths in multiples of 8).
    """
    if widths is None:
        return TINY_STAGES
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) != len(TINY_STAGES):
        raise ConfigError(f"widths must give {len(TINY_STAGES)} middle widths (one per stage), got {widths!r}")
    for width in widths:
        check_positive_int("widths", width)
    return tuple(replace(spec, width=int(w)) for spec, w in zip(TINY_STAGES, widths, strict=True))


def build_tiny(block: BlockConfig, widths: Sequence[int] | None = None, **kwargs: object) -> SmallResNeXt:
    kwargs.setdefault("stem_stride", 2)
    return build_small(tiny_stages(widths), block, 24, **kwargs)


@register_model("compact", TINY_SK_OPTIONS, input_size=(1, 28, 28), num_classes=10)
def sknet_tiny(**kwargs: object) -> SmallResNeXt:
    """Compact SKNet for 28×28 grayscale (Fashion-MNIST): 3 SK units, 172k parameters, ~5.9 MMACs."""
    return build_tiny(TINY_BLOCK.replace(middle=Middle.SK), **kwargs)


@register_model("compact", TINY_OPTIONS, input_size=(1, 28, 28), num_classes=10)
def resnext_tiny(**kwargs: object) -> SmallResNeXt:
    """The same compact network with plain grouped 3×3 middles (the ResNeXt baseline of sknet_tiny)."""
    return build_tiny(TINY_BLOCK, **kwargs)


@register_model("compact", TINY_SE_OPTIONS, input_size=(1, 28, 28), num_classes=10)
def senet_tiny(**kwargs: object) -> SmallResNeXt:
    """resnext_tiny with SE (r = 16) on each unit's expanded output, as senet29: 148k parameters, ~5.1 MMACs."""
    return build_tiny(TINY_BLOCK.replace(se_reduction=16), **kwargs)


# ---------------------------------------------------------------------------------------------------------
# CIFAR ResNeXt-29 (Xie et al. 2017, section 5.3): a 3×3 stem of 64, three stages of 3 bottlenecks with
# outputs 256, 512, 1024; the middle width C·d doubles with each stage. 32×32 input, 10 classes by default.


def cifar_stages(cardinality: int, group_width: int) -> tuple[StageSpec, ...]:
    width = cardinality * group_width
    return tuple(StageSpec(3, width * 2**i, 256 * 2**i, 1 if i == 0 else 2) for i in range(3))


CIFAR_OPTIONS = (*NETWORK_OPTIONS, "drop_path_rate", "zero_init_last_bn", "groups", "output_stride")
CIFAR_SK_OPTIONS = (*CIFAR_OPTIONS, *SK_FIELDS)
CIFAR_SE_OPTIONS = (*CIFAR_OPTIONS, "se_reduction")


@register_model("cifar", CIFAR_OPTIONS, input_size=(3, 32, 32), num_classes=10)
def resnext29_16x32d(**kwargs: object) -> SmallResNeXt:
    """ResNeXt-29 16×32d for CIFAR: 25.1M parameters (paper Table 5: 25.2M)."""
    return build_small(cifar_stages(16, 32), BlockConfig(groups=16), 64, **kwargs)


@register_model("cifar", CIFAR_OPTIONS, input_size=(3, 32, 32), num_classes=10)
def resnext29_8x64d(**kwargs: object) -> SmallResNeXt:
    """ResNeXt-29 8×64d for CIFAR: 34.4M parameters."""
    return build_small(cifar_stages(8, 64), BlockConfig(groups=8), 64, **kwargs)


@register_model("cifar", CIFAR_OPTIONS, input_size=(3, 32, 32), num_classes=10)
def resnext29_16x64d(**kwargs: object) -> SmallResNeXt:
    """ResNeXt-29 16×64d for CIFAR: 68.2M parameters (paper: 68.1M)."""
    return build_small(cifar_stages(16, 64), BlockConfig(groups=16), 64, **kwargs)


@register_model("cifar", CIFAR_SE_OPTIONS, input_size=(3, 32, 32), num_classes=10)
def senet29(**kwargs: object) -> SmallResNeXt:
    """SENet-29: SE (r = 16) on ResNeXt-29 8×64d, 34.9M parameters (paper: 35.0M)."""
    return build_small(cifar_stages(8, 64), BlockConfig(groups=8, se_reduction=16), 64, **kwargs)


@register_model("cifar", CIFAR_SK_OPTIONS, input_size=(3, 32, 32), num_classes=10)
def sknet29(**kwargs: object) -> SmallResNeXt:
    """SKNet-29: ResNeXt-29 16×32d with SK[M=2, G=32, r=16] middles, 28.3M parameters (paper: 27.7M).

    The paper's SK unit always has G = 32; on the 16×32d widths (512, 1024, 2048) that makes each of the
    two paths cost half of the 16-group conv it replaces. With G = 16 the count would be 37.5M. No choice
    of G per path, r or L gives 27.7M within 1.7% (see docs/models.md).
    """
    return build_small(cifar_stages(16, 32), BlockConfig(middle=Middle.SK, groups=32), 64, **kwargs)
