"""Reusable blocks: SK convolution, SE, the pluggable bottleneck."""

from sknet.layers.bottleneck import BlockConfig, Bottleneck, Middle
from sknet.layers.conv_bn_act import ConvBNAct
from sknet.layers.sk import (
    Aggregation,
    Branch,
    Fuse,
    SelectAttention,
    SKConv2d,
    attention_dim,
    parse_branches,
    select_paths,
)
from sknet.layers.squeeze_excite import SqueezeExcite

__all__ = [
    "Aggregation",
    "BlockConfig",
    "Bottleneck",
    "Branch",
    "ConvBNAct",
    "Fuse",
    "Middle",
    "SKConv2d",
    "SelectAttention",
    "SqueezeExcite",
    "attention_dim",
    "parse_branches",
    "select_paths",
]
