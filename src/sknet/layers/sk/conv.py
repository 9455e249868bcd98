"""Selective Kernel convolution (Li, Wang, Hu, Yang, CVPR 2019): Split, Fuse, Select.

    Split:  U_m = ReLU(BN(GroupConv_m(X)))                       m = 1..M, one path per branch
    Fuse:   s = mean_HW(Σ_m U_m),  z = ReLU(BN(W s))               W: d×C, d = max(C/r, L)
    Select: a = softmax_m(A z) per channel,  V = Σ_m a_m ⊙ U_m     A: (M·C)×d, one 1×1 conv

The attention a, shaped (N, M, C), is the output of the ``select`` submodule: register a forward hook
on ``layer.select`` (or use :mod:`sknet.analysis`) to read it; nothing is kept when nobody asks.

:meth:`SKConv2d.forward` runs the Split once (:meth:`~SKConv2d.split`: the path convolutions) and hands
its outputs, with the modules that finish the layer (:meth:`~SKConv2d.parts`), to the first tail that
applies (:mod:`sknet.layers.sk.dispatch`: fused CUDA, select kernel, lean CPU, plain).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from sknet.errors import InputShapeError
from sknet.layers.checks import check_divisible, check_image_batch, check_positive_int
from sknet.layers.conv_bn_act import ConvBNAct
from sknet.layers.sk import dispatch, plain
from sknet.layers.sk.attention import Fuse, SelectAttention, attention_dim
from sknet.layers.sk.branches import Aggregation, BranchLike, parse_branches
from sknet.layers.sk.split import Parts


class SKConv2d(nn.Module):
    """Selective Kernel convolution.

    (N, in_channels, H, W) → (N, out_channels, ⌊(H − 1)/stride⌋ + 1, ⌊(W − 1)/stride⌋ + 1).

    Args:
        in_channels, out_channels: C_in and C (both divisible by every path's groups).
        stride: applied in every path.
        groups: G of each grouped path conv (a :class:`Branch` may set its own).
        branches: one entry per path, see :func:`parse_branches`; default the paper's 3×3 and "5×5"
            (3×3, dilation 2).
        reduction, min_dim: r and L of d = max(C / r, L).
        attn_divisor: d rounded to a multiple of this first, as timm's ``rd_divisor`` (``make_divisible``:
            to the nearest multiple, at least one, never below 90% of C / r); 1: C // r exactly (the paper).
        aggregation: "sk" (attention) or "sum" (plain sum of paths, no attention parameters).
        attn_dim: explicit d, overriding r and L (the authors' released SKNet-101 uses 16 in stage 3).

    Set ``fused_tail = False`` on a layer to keep it off the CUDA kernels (it then runs the plain tail: for
    comparisons; ``SKNET_FUSED=0`` does it for every layer), ``lean_training = False`` to keep its CPU
    training off the lean tail (:mod:`sknet.layers.sk.dispatch`).
    """

    fused_tail: bool = True
    # False: CPU training takes the plain tail instead of the lean one, whose backward re-enters autograd:
    # inside torch.utils.checkpoint each re-entry would recompute the whole checkpointed stage.
    lean_training: bool = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        groups: int = 32,
        branches: str | Iterable[BranchLike] = ((3, 1), (3, 2)),
        reduction: int = 16,
        min_dim: int = 32,
        attn_divisor: int = 1,
        aggregation: str | Aggregation = Aggregation.SK,
        attn_dim: int | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("stride", stride)
        check_positive_int("groups", groups)
        check_positive_int("reduction", reduction)
        check_positive_int("min_dim", min_dim)
        check_positive_int("attn_divisor", attn_divisor)
        self.branches = parse_branches(branches)
        self.aggregation = Aggregation.parse(aggregation)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

        paths = []
        for i, branch in enumerate(self.branches):
            g = branch.groups or groups
            check_divisible(f"in_channels (path {i}: {branch})", in_channels, g)
            check_divisible(f"out_channels (path {i}: {branch})", out_channels, g)
            paths.append(ConvBNAct(in_channels, out_channels, branch.kernel_size, stride, branch.dilation, g))
        self.paths = nn.ModuleList(paths)

        if self.aggregation is Aggregation.SK:
            dim = attn_dim if attn_dim is not None else attention_dim(out_channels, reduction, min_dim, attn_divisor)
            check_positive_int("attn_dim", dim)
            self.attn_dim = dim
            self.fuse = Fuse(out_channels, dim)
            self.select = SelectAttention(dim, out_channels, len(self.branches))
        else:
            self.attn_dim = 0
            self.fuse = None
            self.select = None

    @property
    def num_paths(self) -> int:
        return len(self.branches)

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The Split's convolutions: c_m = conv_m(x), M tensors (N, out_channels, H', W'), before each path's
        norm and activation (which :meth:`parts` hands to the tail)."""
        return [path.conv(x) for path in self.paths]

    def parts(self) -> Parts:
        """The modules every tail applies to the Split's outputs, passed explicitly (no tail reads this
        layer's attributes)."""
        return Parts(
            norms=tuple(path.bn for path in self.paths),
            acts=tuple(path.act for path in self.paths),
            fuse=self.fuse,
            select=self.select,
            training=self.training,
            fused=self.fused_tail,
            lean=self.lean_training,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.fx.Proxy):  # FX symbolic tracing: no tensor to check or dispatch on
            return self.forward_plain(x)
        check_image_batch(x, self.in_channels, type(self).__name__)
        if self.select is not None and self.training and x.shape[0] == 1:
            raise InputShapeError(
                "SKConv2d in training mode needs a batch of at least 2: the fuse-step BatchNorm "
                "normalises the pooled descriptor over the batch (use eval() or a larger batch)"
            )
        return dispatch.run_tail(self.parts(), self.split(x))

    def forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        """The plain tail after the same Split: the readable reference."""
        return plain.forward(self.parts(), self.split(x))

    def tail_for(self, x: torch.Tensor) -> str:
        """The name of the tail a call on `x` would run ("fused", "select-kernel", "lean" or "plain", in the
        current grad and autocast mode); runs the Split's convolutions to decide."""
        return dispatch.choose(self.parts(), self.split(x)).NAME

    def extra_repr(self) -> str:
        paths = ", ".join(str(b) for b in self.branches)
        return (
            f"{self.in_channels}, {self.out_channels}, stride={self.stride}, paths=[{paths}], "
            f"aggregation={self.aggregation.value}, d={self.attn_dim}"
        )
