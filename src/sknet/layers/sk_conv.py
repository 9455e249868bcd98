"""Selective Kernel convolution (Li, Wang, Hu, Yang, CVPR 2019): Split, Fuse, Select.

    Split:  U_m = ReLU(BN(GroupConv_m(X)))                       m = 1..M, one path per branch
    Fuse:   s = mean_HW(Σ_m U_m),  z = ReLU(BN(W s))               W: d×C, d = max(C/r, L)
    Select: a = softmax_m(A z) per channel,  V = Σ_m a_m ⊙ U_m     A: (M·C)×d, one 1×1 conv

The attention a, shaped (N, M, C), is the output of the ``select`` submodule: register a forward hook
on ``sk_conv.select`` (or use :mod:`sknet.analysis`) to read it; nothing is kept when nobody asks.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sknet.enums import parse_enum
from sknet.errors import ConfigError, InputShapeError
from sknet.layers.checks import check_divisible, check_image_batch, check_positive_int
from sknet.layers.conv_bn_act import ConvBNAct
from sknet.layers.select import select_paths
from sknet.layers.sk_fused import fused_tail_ok, sk_fused_forward
from sknet.layers.sk_recompute import lean_path_ok, sk_train_forward


class Aggregation(str, enum.Enum):
    """How the paths are combined: SK attention (the paper) or a plain sum (the Table 7 baseline)."""

    SK = "sk"
    SUM = "sum"

    @classmethod
    def parse(cls, value: object) -> Aggregation:
        return parse_enum(cls, value, "aggregation")


@dataclass(frozen=True)
class Branch:
    """One SK path: a `kernel_size`×`kernel_size` conv with `dilation` and `groups` (None: the layer's).

    The paper's "5×5" path is ``Branch(3, 2)`` (a 3×3 with dilation 2, same receptive field); a true
    5×5 is ``Branch(5, 1)``.
    """

    kernel_size: int = 3
    dilation: int = 1
    groups: int | None = None

    def __post_init__(self) -> None:
        check_positive_int("branch kernel_size", self.kernel_size)
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"branch kernel_size must be odd (same padding), got {self.kernel_size}")
        check_positive_int("branch dilation", self.dilation)
        if self.groups is not None:
            check_positive_int("branch groups", self.groups)

    @property
    def receptive_field(self) -> int:
        """Side of the square the path sees: dilation·(k − 1) + 1."""
        return self.dilation * (self.kernel_size - 1) + 1

    @classmethod
    def from_kernel(cls, size: int) -> Branch:
        """The paper's convenience form: a k×k receptive field as a 3×3 with dilation (k − 1)/2."""
        check_positive_int("kernel size", size)
        if size % 2 == 0:
            raise ConfigError(f"kernel size must be odd, got {size}")
        return cls(1, 1) if size == 1 else cls(3, (size - 1) // 2)

    def __str__(self) -> str:
        text = f"{self.kernel_size}d{self.dilation}"
        return text if self.groups is None else f"{text}g{self.groups}"


BranchLike = int | Sequence[int] | Branch
_BRANCH_TOKEN = re.compile(r"^(\d+)(?:d(\d+))?(?:g(\d+))?$")


def parse_branches(spec: str | Iterable[BranchLike]) -> tuple[Branch, ...]:
    """Normalise a branch specification to a tuple of :class:`Branch`.

    Accepted forms, mixed freely:
      - ``5`` — receptive field 5 as the paper builds it: 3×3, dilation 2;
      - ``(k, d)`` or ``(k, d, groups)`` — an explicit kernel, e.g. ``(5, 1)`` is a true 5×5;
      - ``Branch(...)``;
      - a string: ``"3,5"`` (receptive fields) or ``"3d1,3d2"``, ``"3d1,5d1g64"`` (kernel, dilation, groups).
    """
    if isinstance(spec, str):
        tokens = [t.strip().lower() for t in spec.split(",") if t.strip()]
        items: list[BranchLike] = []
        for token in tokens:
            match = _BRANCH_TOKEN.match(token)
            if match is None:
                raise ConfigError(
                    f"cannot parse branch {token!r} in {spec!r}: use a kernel size like '5' "
                    "or kernel/dilation/groups like '3d2' or '5d1g64'"
                )
            k, d, g = match.groups()
            if d is None and g is None:
                items.append(int(k))
            else:
                items.append(Branch(int(k), int(d or 1), int(g) if g else None))
        spec = items
    if isinstance(spec, (int, Branch)):
        spec = [spec]
    try:
        raw = list(spec)
    except TypeError:
        raise ConfigError(
            f"branches must be a sequence of kernel sizes or (kernel, dilation) pairs, got {spec!r}"
        ) from None
    if not raw:
        raise ConfigError("branches is empty: an SK convolution needs at least one path")
    branches = []
    for item in raw:
        if isinstance(item, Branch):
            branches.append(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            branches.append(Branch.from_kernel(item))
        elif isinstance(item, Sequence) and not isinstance(item, str) and 2 <= len(item) <= 3:
            branches.append(Branch(*item))
        else:
            raise ConfigError(
                f"cannot read branch {item!r}: use a kernel size (int), (kernel, dilation) or "
                "(kernel, dilation, groups)"
            )
    return tuple(branches)


def attention_dim(channels: int, reduction: int = 16, min_dim: int = 32) -> int:
    """d = max(C / r, L): width of the fused descriptor z (paper eq. 4)."""
    return max(channels // reduction, min_dim)


class Fuse(nn.Module):
    """s (N, C, 1, 1) → z = ReLU(BN(W s)) (N, d, 1, 1)."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, dim, 1, bias=False)
        self.bn = nn.BatchNorm2d(dim)
        self.act = nn.ReLU(inplace=True)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.fc(s)))


class SelectAttention(nn.Module):
    """z (N, d, 1, 1) → attention (N, M, C): one 1×1 conv to M·C logits, softmax across the M paths."""

    def __init__(self, dim: int, channels: int, num_paths: int) -> None:
        super().__init__()
        self.channels = channels
        self.num_paths = num_paths
        self.fc = nn.Conv2d(dim, channels * num_paths, 1, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.fc(z).view(z.shape[0], self.num_paths, self.channels)
        return logits.softmax(dim=1)


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
        aggregation: "sk" (attention) or "sum" (plain sum of paths, no attention parameters).
        attn_dim: explicit d, overriding r and L (the authors' released SKNet-101 uses 16 in stage 3).

    Set ``fused_tail = False`` on a layer to keep it off the fused CUDA tail (it then runs as it would
    without one: for comparisons; ``SKNET_FUSED=0`` does it for every layer).
    """

    fused_tail: bool = True
    # False: CPU training takes the plain composition instead of the lean path, whose backward re-enters
    # autograd: inside torch.utils.checkpoint each re-entry would recompute the whole checkpointed stage.
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
            dim = attn_dim if attn_dim is not None else attention_dim(out_channels, reduction, min_dim)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.fx.Proxy):  # FX symbolic tracing: no tensor to check or dispatch on
            return self.forward_plain(x)
        check_image_batch(x, self.in_channels, type(self).__name__)
        if self.select is not None and self.training and x.shape[0] == 1:
            raise InputShapeError(
                "SKConv2d in training mode needs a batch of at least 2: the fuse-step BatchNorm "
                "normalises the pooled descriptor over the batch (use eval() or a larger batch)"
            )
        # Three implementations of the same equations, chosen here and only here, first match wins:
        #   CUDA (training and evaluation): the fused Triton tail where fused_tail_ok, else the plain one;
        #   CPU eager training in fp32/fp64: the lean path (sk_recompute), else the plain one.
        # (On an H100 the lean path trained slower than the plain composition: it is the CPU's alone.)
        if fused_tail_ok(self, x):  # CUDA: fused Triton kernels for everything after the path convs
            return sk_fused_forward(self, x)
        if self.select is not None and self.training and self.lean_training and lean_path_ok(self.paths, x):
            # CPU training: keep only the path conv outputs; ReLU(BN(·)) is recomputed (sk_recompute).
            return sk_train_forward(self, x)
        return self.forward_plain(x)

    def forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        """The plain composition: the readable reference, what torch.compile and torch.fx trace where no
        kernels run."""
        outs = [path(x) for path in self.paths]
        if self.select is None:
            # Plain-sum baseline (Table 7): no stacking, just accumulate.
            v = outs[0]
            for u in outs[1:]:
                v = v + u
            return v
        # Fuse: mean(Σ U_m) = Σ mean(U_m), so pool each path and never materialise U.
        s = outs[0].mean((2, 3), keepdim=True)
        for u in outs[1:]:
            s = s + u.mean((2, 3), keepdim=True)
        attention = self.select(self.fuse(s))
        return select_paths(outs, attention, normalized=True)

    def extra_repr(self) -> str:
        paths = ", ".join(str(b) for b in self.branches)
        return (
            f"{self.in_channels}, {self.out_channels}, stride={self.stride}, paths=[{paths}], "
            f"aggregation={self.aggregation.value}, d={self.attn_dim}"
        )
