"""Small-image ResNeXt / SKNet: a full-resolution 3×3 stem, then stages of bottlenecks.

The same network serves the compact models for 28×28 grayscale (the main job's `sknet_tiny`) and, with
other stage settings, the CIFAR ResNeXt-29 family. (N, in_chans, H, W) → logits (N, num_classes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from sknet.errors import ConfigError
from sknet.layers import BlockConfig, Bottleneck, ConvBNAct, Middle
from sknet.layers.checks import check_positive_int
from sknet.models.base import BottleneckNet
from sknet.models.registry import register_model
from sknet.models.resnext import build_block_config


@dataclass(frozen=True)
class StageSpec:
    """`units` bottlenecks of middle width `width` and output `out_channels`; the first has `stride`."""

    units: int
    width: int
    out_channels: int
    stride: int


class SmallResNeXt(BottleneckNet):
    """Stem 3×3 (stride 1) → stages of :class:`Bottleneck` → global pool → dropout → fc."""

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
    ) -> None:
        super().__init__(num_classes, in_chans, drop_rate)
        if not stages:
            raise ConfigError("a network needs at least one stage")
        check_positive_int("stem_width", stem_width)
        check_positive_int("stem_stride", stem_stride)
        self.block_config = block
        self.stem = nn.Sequential()
        self.stem.add_module("conv", ConvBNAct(in_chans, stem_width, 3, stride=stem_stride))
        in_channels, reduction = stem_width, stem_stride
        for spec in stages:
            check_positive_int("units per stage", spec.units)
            reduction *= spec.stride
            stage = nn.Sequential(
                *[
                    Bottleneck(
                        in_channels if u == 0 else spec.out_channels,
                        spec.width,
                        spec.out_channels,
                        stride=spec.stride if u == 0 else 1,
                        config=block,
                    )
                    for u in range(spec.units)
                ]
            )
            self.add_stage(stage, spec.out_channels, reduction)
            in_channels = spec.out_channels
        self.build_head(in_channels, zero_init_last_bn)


SMALL_OPTIONS = ("num_classes", "in_chans", "drop_rate", "zero_init_last_bn", "groups", "stem_stride")
SMALL_SK_OPTIONS = (*SMALL_OPTIONS, "branches", "reduction", "min_dim", "aggregation")

# Compact models for 28×28 grayscale: a stride-2 stem, then units at 14, 7 and 4 pixels. On CPUs a
# training step costs activation traffic more than MACs: the stride-2 stem trains ~45% faster than a
# full-resolution one with the same parameters (measured on 2 cores, batch 256, channels_last).
TINY_STAGES = (StageSpec(1, 32, 64, 1), StageSpec(1, 64, 128, 2), StageSpec(1, 128, 256, 2))
TINY_BLOCK = BlockConfig(groups=8, min_dim=16)


def build_small(stages: Sequence[StageSpec], block: BlockConfig, stem_width: int, **kwargs: object):
    block, kwargs = build_block_config(block, kwargs)
    kwargs.setdefault("num_classes", 10)
    return SmallResNeXt(stages, block, stem_width, **kwargs)


def build_tiny(block: BlockConfig, **kwargs: object) -> SmallResNeXt:
    kwargs.setdefault("in_chans", 1)
    kwargs.setdefault("stem_stride", 2)
    return build_small(TINY_STAGES, block, 24, **kwargs)


@register_model("compact", SMALL_SK_OPTIONS, input_size=(1, 28, 28))
def sknet_tiny(**kwargs: object) -> SmallResNeXt:
    """Compact SKNet for 28×28 grayscale (Fashion-MNIST): 3 SK units, 172k parameters, ~5.9 MMACs."""
    return build_tiny(TINY_BLOCK.replace(middle=Middle.SK), **kwargs)


@register_model("compact", SMALL_OPTIONS, input_size=(1, 28, 28))
def resnext_tiny(**kwargs: object) -> SmallResNeXt:
    """The same compact network with plain grouped 3×3 middles (the ResNeXt baseline of sknet_tiny)."""
    return build_tiny(TINY_BLOCK, **kwargs)
