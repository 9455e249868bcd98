"""One ResNeXt bottleneck with a pluggable middle: plain grouped 3×3, SK convolution, optional SE.

    x → 1×1 reduce (BN, ReLU) → middle (stride here) → 1×1 expand (BN) → [SE] → [drop path] → + shortcut(x) → ReLU

ResNeXt: middle = grouped 3×3. SENet: ResNeXt + SE on the expanded output, before the residual add.
SKNet: middle = SKConv2d. The stride never sits in the 1×1 reduce (paper, section 3.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from sknet.enums import TextEnum
from sknet.layers.checks import check_divisible, check_image_batch, check_positive_int
from sknet.layers.conv_bn_act import ConvBNAct
from sknet.layers.sk import Aggregation, Branch, SKConv2d, parse_branches
from sknet.layers.squeeze_excite import SqueezeExcite


class Middle(TextEnum):
    """The bottleneck's middle 3×3 stage."""

    CONV = "conv"  # grouped 3×3 (ResNeXt)
    SK = "sk"  # selective kernel convolution


# The metadata of a BlockConfig field that is an SKConv2d keyword (same name): the builders' SK options,
# the registry's and make_middle's keywords are derived from these fields; a new SK setting is a field here
# and a keyword of SKConv2d.
SK = {"sk": True}


@dataclass(frozen=True)
class BlockConfig:
    """What goes into every bottleneck of a network (typed, validated on creation). Every field is a builder
    option of the networks made of these blocks; those marked ``SK`` are passed to :class:`SKConv2d` by
    keyword (paper defaults: M = 2 paths 3×3 and "5×5", r = 16, L = 32; section 3.1, Table 1)."""

    middle: Middle = Middle.CONV
    groups: int = 32
    branches: tuple[Branch, ...] = field(default_factory=lambda: parse_branches(((3, 1), (3, 2))), metadata=SK)
    reduction: int = field(default=16, metadata=SK)  # r of d = max(C/r, L)
    min_dim: int = field(default=32, metadata=SK)  # L
    attn_divisor: int = field(default=1, metadata=SK)  # d a multiple of this (timm's rd_divisor; 1: the paper)
    aggregation: Aggregation = field(default=Aggregation.SK, metadata=SK)
    se_reduction: int | None = None  # SE on the expanded output when set

    @classmethod
    def sk_fields(cls) -> tuple[str, ...]:
        """The fields passed to SKConv2d (builder options of every SK network)."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("sk"))

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The fields a builder takes as options (all but `middle`, which the builder fixes)."""
        return tuple(f.name for f in fields(cls) if f.name != "middle")

    def sk_kwargs(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.sk_fields()}

    def __post_init__(self) -> None:
        # Normalise user-friendly values (strings, tuples) so every consumer sees typed fields.
        object.__setattr__(self, "middle", Middle.parse(self.middle))
        object.__setattr__(self, "branches", parse_branches(self.branches))
        object.__setattr__(self, "aggregation", Aggregation.parse(self.aggregation))
        check_positive_int("groups", self.groups)
        check_positive_int("reduction", self.reduction)
        check_positive_int("min_dim", self.min_dim)
        if self.se_reduction is not None:
            check_positive_int("se_reduction", self.se_reduction)

    def replace(self, **changes: object) -> BlockConfig:
        return replace(self, **changes)

    def make_middle(
        self,
        channels: int,
        stride: int = 1,
        groups: int | None = None,
        attn_dim: int | None = None,
        act_layer: type[nn.Module] | None = nn.ReLU,
    ) -> nn.Module:
        """The 3×3 middle of a unit, (N, C, H, W) → (N, C, H/stride, W/stride): an SK convolution, or a plain
        grouped conv + BN + `act_layer` (None: no activation). `groups` defaults to this config's; depthwise
        families pass the channel count."""
        groups = self.groups if groups is None else groups
        if self.middle is Middle.SK:
            return SKConv2d(channels, channels, stride=stride, groups=groups, attn_dim=attn_dim, **self.sk_kwargs())
        check_divisible("width", channels, groups)
        if act_layer is None:
            return ConvBNAct(channels, channels, 3, stride, groups=groups, act=False)
        return ConvBNAct(channels, channels, 3, stride, groups=groups, act_layer=act_layer)


class Bottleneck(nn.Module):
    """(N, in_channels, H, W) → (N, out_channels, ⌊(H − 1)/stride⌋ + 1, ⌊(W − 1)/stride⌋ + 1)."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        out_channels: int,
        stride: int = 1,
        config: BlockConfig | None = None,
        attn_dim: int | None = None,
        drop_path: float = 0.0,
    ) -> None:
        """`drop_path`: probability of dropping the residual branch of a sample in training (stochastic depth,
        Huang et al. 2016; torchvision's StochasticDepth, "row" mode: survivors scaled by 1/(1 − p), the
        identity in eval)."""
        super().__init__()
        config = config or BlockConfig()
        check_positive_int("width", width)
        check_positive_int("stride", stride)
        self.in_channels = in_channels
        self.conv1 = ConvBNAct(in_channels, width, 1)
        self.conv2 = config.make_middle(width, stride, attn_dim=attn_dim)
        self.conv3 = ConvBNAct(width, out_channels, 1, act=False)
        self.se = SqueezeExcite(out_channels, config.se_reduction) if config.se_reduction else None
        self.downsample = (
            ConvBNAct(in_channels, out_channels, 1, stride, act=False)
            if stride != 1 or in_channels != out_channels
            else None
        )
        self.act = nn.ReLU(inplace=True)
        # None rather than an identity module when off: the module tree (and what FX traces) stays as before.
        self.drop_path = StochasticDepth(drop_path, "row") if drop_path > 0 else None

    def zero_init_last_bn(self) -> None:
        """Start the residual branch at zero (Goyal et al.): the block begins as the identity."""
        nn.init.zeros_(self.conv3.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.in_channels, type(self).__name__)
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.conv3(self.conv2(self.conv1(x)))
        if self.se is not None:
            out = self.se(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        out += shortcut  # in place: BN and SE do not keep their outputs for backward
        return self.act(out)
