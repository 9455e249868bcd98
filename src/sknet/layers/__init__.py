"""Reusable blocks: the SK convolution (:mod:`.selective_kernel`, its fast tails in :mod:`.sk_tails`), SE,
norms as an option, the pluggable bottleneck."""

from sknet.layers.bottleneck import BlockConfig, Bottleneck, Middle
from sknet.layers.branches import Aggregation, Branch, parse_branches
from sknet.layers.conv_bn_act import ConvBNAct
from sknet.layers.norm import NORM_LAYERS, NormKind, norm_kind
from sknet.layers.selective_kernel import Contract, Fuse, SelectAttention, SKConv2d, SKOptions, attention_dim
from sknet.layers.squeeze_excite import SqueezeExcite
from sknet.layers.weighted_sum import weighted_sum

__all__ = [
    "NORM_LAYERS",
    "Aggregation",
    "BlockConfig",
    "Bottleneck",
    "Branch",
    "Contract",
    "ConvBNAct",
    "Fuse",
    "Middle",
    "NormKind",
    "SKConv2d",
    "SKOptions",
    "SelectAttention",
    "SqueezeExcite",
    "attention_dim",
    "norm_kind",
    "parse_branches",
    "weighted_sum",
]
