"""One ResNeXt bottleneck with a pluggable middle: plain grouped 3×3, SK convolution, optional SE.

    x → 1×1 reduce (BN, ReLU) → middle (stride here) → 1×1 expand (BN) → [SE] → [drop path] → + shortcut(x) → ReLU

ResNeXt: middle = grouped 3×3. SENet: ResNeXt + SE on the expanded output, before the residual add.
SKNet: middle = SKConv2d. The stride never sits in the 1×1 reduce (paper, section 3.2).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from sknet.enums import TextEnum
from sknet.layers.checks import check_divisible, check_image_batch, check_positive_int
from sknet.layers.conv_bn_act import ConvBNAct
from sknet.layers.selective_kernel import SKConv2d, SKOptions
from sknet.layers.squeeze_excite import SqueezeExcite


class Middle(TextEnum):
    """The bottleneck's middle 3×3 stage."""

    CONV = "conv"  # grouped 3×3 (ResNeXt)
    SK = "sk"  # selective kernel convolution


@dataclass(frozen=True)
class BlockConfig(SKOptions):
    """What goes into every bottleneck of a network (typed, validated on creation). Every field is a builder
    option of the networks made of these blocks: the SK layer's (:class:`SKOptions`, passed to
    :class:`SKConv2d` by keyword, with their defaults and checks) and these. `norm_layer` is every norm of the
    block (1×1 convs, middle, shortcut), not only the SK layer's."""

    middle: Middle = Middle.CONV
    groups: int = 32
    se_reduction: int | None = None  # SE on the expanded output when set

    @classmethod
    def sk_fields(cls) -> tuple[str, ...]:
        """The fields passed to SKConv2d (builder options of every SK network)."""
        return SKOptions.names()

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The fields a builder takes as options (all but `middle`, which the builder fixes)."""
        return tuple(f.name for f in fields(cls) if f.name != "middle")

    def sk_kwargs(self) -> dict[str, object]:
        return SKOptions.kwargs(self)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "middle", Middle.parse(self.middle))
        check_positive_int("groups", self.groups)
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
        dilation: int = 1,
    ) -> nn.Module:
        """The 3×3 middle of a unit, (N, C, H, W) → (N, C, H/stride, W/stride): an SK convolution, or a plain
        grouped conv + norm + `act_layer` (None: no activation). `groups` defaults to this config's; depthwise
        families pass the channel count. `dilation`: of a dilated stage (an SK layer multiplies its paths' own
        dilations by it)."""
        groups = self.groups if groups is None else groups
        if self.middle is Middle.SK:
            return SKConv2d(channels, channels, stride, groups, attn_dim, dilation, **self.sk_kwargs())
        check_divisible("width", channels, groups)
        act = {"act": False} if act_layer is None else {"act_layer": act_layer}
        return ConvBNAct(channels, channels, 3, stride, dilation, groups, norm_layer=self.norm_layer, **act)


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
        dilation: int = 1,
    ) -> None:
        """`drop_path`: probability of dropping the residual branch of a sample in training (stochastic depth,
        Huang et al. 2016; torchvision's StochasticDepth, "row" mode: survivors scaled by 1/(1 − p), the
        identity in eval). `dilation`: the middle's, in a stage that dilates instead of striding."""
        super().__init__()
        config = config or BlockConfig()
        check_positive_int("width", width)
        check_positive_int("stride", stride)
        self.in_channels = in_channels
        norm = config.norm_layer
        self.conv1 = ConvBNAct(in_channels, width, 1, norm_layer=norm)
        self.conv2 = config.make_middle(width, stride, attn_dim=attn_dim, dilation=dilation)
        self.conv3 = ConvBNAct(width, out_channels, 1, act=False, norm_layer=norm)
        self.se = SqueezeExcite(out_channels, config.se_reduction) if config.se_reduction else None
        self.downsample = (
            ConvBNAct(in_channels, out_channels, 1, stride, act=False, norm_layer=norm)
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
