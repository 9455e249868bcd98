"""The Selective Kernel layer, bottom up: attention modules (:mod:`.attention`), path options
(:mod:`.branches`), what the Split hands to a tail (:mod:`.split`), the four tails (:mod:`.plain`,
:mod:`.lean`, :mod:`.select_kernel`, :mod:`.fused`), the rule that picks one (:mod:`.dispatch`), and the
layer (:mod:`.conv`)."""

from sknet.layers.sk.attention import Fuse, SelectAttention, attention_dim
from sknet.layers.sk.branches import Aggregation, Branch, BranchLike, parse_branches
from sknet.layers.sk.conv import SKConv2d
from sknet.layers.sk.select import select_paths
from sknet.layers.sk.split import Parts

__all__ = [
    "Aggregation",
    "Branch",
    "BranchLike",
    "Fuse",
    "Parts",
    "SKConv2d",
    "SelectAttention",
    "attention_dim",
    "parse_branches",
    "select_paths",
]
