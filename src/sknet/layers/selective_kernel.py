"""Selective Kernel convolution (Li, Wang, Hu, Yang, CVPR 2019): Split, Fuse, Select.

    Split:  U_m = ReLU(BN(GroupConv_m(X)))                     m = 1..M, one path per branch   (eq. 1)
    Fuse:   s = mean_HW(Σ_m U_m),  z = ReLU(BN(W s))             W: d×C, d = max(C/r, L)          (eqs. 2–4)
    Select: a = softmax_m(A z) per channel,  V = Σ_m a_m ⊙ U_m   A: (M·C)×d, one 1×1 conv        (eqs. 5–6)

:meth:`SKConv2d.forward` is these lines. Where a faster implementation of the same equations applies (a
fused CUDA tail, a memory-lean CPU training tail: :mod:`sknet.layers.sk_tails`), the forward hands it the
Split's convolutions instead; what the tails may rely on, the modules state (:meth:`SKConv2d.contract`).

The attention a, shaped (N, M, C), is the output of the ``select`` submodule: register a forward hook on
``layer.select`` (or use :mod:`sknet.analysis`) to read it; nothing is kept when nobody asks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from sknet.errors import ConfigError, InputShapeError
from sknet.layers import sk_tails
from sknet.layers.branches import Aggregation, Branch, parse_branches
from sknet.layers.checks import check_divisible, check_image_batch, check_positive_int
from sknet.layers.conv_bn_act import ConvBNAct
from sknet.layers.helpers import make_divisible
from sknet.layers.norm import DEFAULT_NORM, NormKind, make_descriptor_norm, norm_kind, norm_name
from sknet.layers.weighted_sum import weighted_sum


@dataclass(frozen=True)
class SKOptions:
    """The SK layer's options beside its sizes, with the paper's defaults (section 3.1, Table 1) and their
    checks, stated once: :class:`SKConv2d` takes them as keywords, and every SK network's builder through
    :class:`~sknet.layers.bottleneck.BlockConfig`, which extends this record.

    branches: the paths, see :func:`~sknet.layers.branches.parse_branches`; default the paper's 3×3 and
        "5×5" (a 3×3 with dilation 2).
    reduction, min_dim: r and L of d = max(C / r, L) (paper: 16 and 32).
    attn_divisor: d rounded to a multiple of this first, as timm's ``rd_divisor`` (``make_divisible``: to the
        nearest multiple, at least one, never below 90% of C / r); 1: C // r exactly (the paper).
    aggregation: "sk" (attention) or "sum" (plain sum of the paths, no attention: Table 7's baseline).
    norm_layer: the norm of every path and of the fuse step (see :mod:`sknet.layers.norm`: "batchnorm",
        "frozen", "syncbn", "groupnorm" or a callable ``f(channels) → module``).
    """

    branches: tuple[Branch, ...] = field(default_factory=lambda: parse_branches(((3, 1), (3, 2))))
    reduction: int = 16
    min_dim: int = 32
    attn_divisor: int = 1
    aggregation: Aggregation = Aggregation.SK
    norm_layer: str | Callable[[int], nn.Module] = DEFAULT_NORM

    def __post_init__(self) -> None:
        # User-friendly values (strings, tuples, classes) become typed ones, so every consumer sees one form.
        object.__setattr__(self, "branches", parse_branches(self.branches))
        object.__setattr__(self, "aggregation", Aggregation.parse(self.aggregation))
        object.__setattr__(self, "norm_layer", norm_name(self.norm_layer))
        check_positive_int("reduction", self.reduction)
        check_positive_int("min_dim", self.min_dim)
        check_positive_int("attn_divisor", self.attn_divisor)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(SKOptions))

    @classmethod
    def from_kwargs(cls, options: dict[str, object]) -> SKOptions:
        """The record of keyword `options`; ConfigError naming any that is not an SK option."""
        unknown = sorted(set(options) - set(cls.names()))
        if unknown:
            raise ConfigError(f"SKConv2d has no option {', '.join(unknown)}; its options are {', '.join(cls.names())}")
        return cls(**options)

    def kwargs(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.names()}

    def attention_dim(self, channels: int) -> int:
        """d = max(C / r, L), the width of the fused descriptor z (paper eq. 4); with `attn_divisor` > 1,
        C / r is rounded by :func:`~sknet.layers.helpers.make_divisible` first (timm's ``rd_divisor``)."""
        r, divisor = self.reduction, self.attn_divisor
        reduced = channels // r if divisor == 1 else make_divisible(channels / r, divisor)
        return max(reduced, self.min_dim)


def attention_dim(channels: int, **options: object) -> int:
    """d of an SK layer of `channels` channels with SK `options` (default the paper's: max(C / 16, 32))."""
    return SKOptions.from_kwargs(options).attention_dim(channels)


class Fuse(nn.Module):
    """s (N, C, 1, 1) → z = ReLU(norm(W s)) (N, d, 1, 1)."""

    def __init__(self, channels: int, dim: int, norm_layer: object = DEFAULT_NORM) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, dim, 1, bias=False)
        self.bn = make_descriptor_norm(norm_layer, dim)
        self.act = nn.ReLU(inplace=True)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.fc(s)))

    @property
    def closed_form(self) -> bool:
        """Whether this is z = ReLU(norm(W s)) with W a bias-free 1×1 convolution and a norm of the batch's
        statistics or a fixed affine map: the form whose derivative :mod:`sknet.layers.sk_tails.attention`
        states (a replaced or changed submodule makes it False)."""
        return (
            _plain_1x1(self.fc)
            and norm_kind(self.bn) in (NormKind.BATCH, NormKind.AFFINE)
            and type(self.bn) is not nn.Identity  # folded into fc (which then has a bias): inference only
            and type(self.act) is nn.ReLU
        )


class SelectAttention(nn.Module):
    """z (N, d, 1, 1) → attention (N, M, C): one 1×1 conv to M·C logits, then the gate across the M paths."""

    gate = "softmax"  # a_m = exp(l_m) / Σ_k exp(l_k) per channel

    def __init__(self, dim: int, channels: int, num_paths: int) -> None:
        super().__init__()
        self.channels = channels
        self.num_paths = num_paths
        self.fc = nn.Conv2d(dim, channels * num_paths, 1, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.fc(z).view(z.shape[0], self.num_paths, self.channels)
        return logits.softmax(dim=1)

    @property
    def sums_to_one(self) -> bool:
        """The attention of every channel sums to 1 over the paths (a softmax gate)."""
        return self.gate == "softmax"

    @property
    def closed_form(self) -> bool:
        """A bias-free 1×1 convolution then the softmax gate: the form whose derivative
        :mod:`sknet.layers.sk_tails.attention` states."""
        return _plain_1x1(self.fc) and self.gate == "softmax"


def _plain_1x1(conv: nn.Module) -> bool:
    return type(conv) is nn.Conv2d and conv.bias is None and conv.kernel_size == (1, 1) and conv.groups == 1


def _hooked(modules: tuple[nn.Module, ...]) -> bool:
    """Forward (pre-)hooks on any of `modules`, or registered for every module."""
    everywhere = nn.modules.module
    if getattr(everywhere, "_global_forward_hooks", None) or getattr(everywhere, "_global_forward_pre_hooks", None):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


@dataclass(frozen=True)
class Contract:
    """What one call of an SK layer's modules computes beyond "the SK equations", as they state it now: all
    the fast tails (:mod:`sknet.layers.sk_tails`) may rely on. A tail that needs more declines the call."""

    path_norm: NormKind  # the kind of every path's norm (OTHER where the paths' norms differ in kind)
    path_relu: bool  # every path ends in nn.ReLU
    attention: bool  # False: the plain sum of the paths (aggregation "sum"), nothing to select
    sums_to_one: bool  # the gate's weights sum to 1 over the paths, per channel (softmax)
    hooked: bool  # forward hooks on the attention's modules (they may read or replace a)
    closed_form: bool  # Fuse and Select have the form whose derivative sk_tails.attention states; no hooks


class SKConv2d(nn.Module):
    """Selective Kernel convolution.

    (N, in_channels, H, W) → (N, out_channels, ⌊(H − 1)/stride⌋ + 1, ⌊(W − 1)/stride⌋ + 1).

    Args:
        in_channels, out_channels: C_in and C (both divisible by every path's groups).
        stride: applied in every path.
        groups: G of each grouped path conv (a :class:`~sknet.layers.branches.Branch` may set its own).
        dilation: multiplies every path's own dilation (a dilated stage of a network with a smaller output
            stride: the paper's "5×5", a 3×3 with dilation 2, becomes a 3×3 with dilation 2·`dilation`, which
            reads the input positions it read before the stage stopped striding).
        attn_dim: an explicit d, overriding r and L (the authors' released SKNet-101 uses 16 in stage 3).
        options: :class:`SKOptions` by keyword: ``branches``, ``reduction``, ``min_dim``, ``attn_divisor``,
            ``aggregation``, ``norm_layer``.

    Raises ConfigError for options that do not make a layer (channels not divisible by groups, an unknown
    option or norm), InputShapeError for an input of the wrong shape, and for a batch of one in training
    where the fuse step normalises over the batch.

    ``tails``: the names of the fast tails (:mod:`sknet.layers.sk_tails`) this layer may hand a call to; None
    (default) any that applies, ``()`` none (its own forward runs every call: for comparisons, debugging).
    """

    _tails: tuple[str, ...] | None = None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        groups: int = 32,
        attn_dim: int | None = None,
        dilation: int = 1,
        **options: object,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("stride", stride)
        check_positive_int("groups", groups)
        check_positive_int("dilation", dilation)
        self.options = SKOptions.from_kwargs(options)
        self.branches = self.options.branches
        self.aggregation = self.options.aggregation
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.dilation = dilation

        paths = []
        for i, branch in enumerate(self.branches):
            g = branch.groups or groups
            check_divisible(f"in_channels (path {i}: {branch})", in_channels, g)
            check_divisible(f"out_channels (path {i}: {branch})", out_channels, g)
            paths.append(
                ConvBNAct(
                    in_channels, out_channels, branch.kernel_size, stride, branch.dilation * dilation, g,
                    norm_layer=self.options.norm_layer,
                )
            )  # fmt: skip
        self.paths = nn.ModuleList(paths)

        if self.aggregation is Aggregation.SK:
            dim = attn_dim if attn_dim is not None else self.options.attention_dim(out_channels)
            check_positive_int("attn_dim", dim)
            self.attn_dim = dim
            self.fuse = Fuse(out_channels, dim, self.options.norm_layer)
            self.select = SelectAttention(dim, out_channels, len(self.branches))
        else:
            self.attn_dim = 0
            self.fuse = None
            self.select = None

    @property
    def num_paths(self) -> int:
        return len(self.branches)

    @property
    def tails(self) -> tuple[str, ...] | None:
        return self._tails

    @tails.setter
    def tails(self, names: object) -> None:
        self._tails = sk_tails.tail_names(names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.in_channels, type(self).__name__)
        if not isinstance(x, torch.fx.Proxy):
            self.check_batch_size(x.shape[0])
        # Split: M convolutions of the same input.
        convs = [path.conv(x) for path in self.paths]
        tail = sk_tails.find(self, convs)
        if tail is not None:  # a faster implementation of the lines below
            return tail.forward(self, convs)
        paths = [path.act(path.bn(c)) for path, c in zip(self.paths, convs, strict=True)]  # U_m
        if self.select is None:  # the plain-sum baseline (Table 7)
            return _sum(paths)
        # Fuse: s = mean_HW Σ_m U_m (each path pooled: U is never formed); z = ReLU(BN(W s)).
        z = self.fuse(_sum([u.mean((2, 3), keepdim=True) for u in paths]))
        # Select: a = softmax over the paths of A z, (N, M, C); V = Σ_m a_m ⊙ U_m.
        return weighted_sum(paths, self.select(z), self.select.sums_to_one)

    def contract(self) -> Contract:
        """What this layer's modules compute now (norm kinds, gate, hooks): see :class:`Contract`."""
        kinds = {norm_kind(path.bn) for path in self.paths}
        attention = self.select is not None
        hooked = attention and _hooked((self.fuse, *self.fuse.children(), self.select, *self.select.children()))
        return Contract(
            path_norm=kinds.pop() if len(kinds) == 1 else NormKind.OTHER,
            path_relu=all(type(path.act) is nn.ReLU for path in self.paths),
            attention=attention,
            sums_to_one=attention and self.select.sums_to_one,
            hooked=hooked,
            closed_form=attention and not hooked and self.fuse.closed_form and self.select.closed_form,
        )

    def tail_for(self, x: torch.Tensor) -> str:
        """The name of the tail a call on `x` would run ("plain": the forward's own lines), in the current
        grad and autocast mode; runs the Split's convolutions to decide."""
        tail = sk_tails.find(self, [path.conv(x) for path in self.paths])
        return "plain" if tail is None else tail.name

    def check_batch_size(self, batch: int) -> None:
        """InputShapeError for a batch of one in training where the fuse step's BatchNorm would normalise one
        value per channel (a frozen or group norm takes it)."""
        if batch != 1 or self.fuse is None:
            return
        bn = self.fuse.bn
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not bn.training:
            return
        if isinstance(bn, nn.SyncBatchNorm) and _world_size() > 1:
            return  # the statistics are taken over every process's batch
        raise InputShapeError(
            f"{type(self).__name__} in training mode needs a batch of at least 2: the fuse step's "
            f"{type(bn).__name__} normalises the pooled descriptor over the batch (use eval(), a larger batch, "
            "or norm_layer='frozen' or 'groupnorm')"
        )

    def extra_repr(self) -> str:
        paths = ", ".join(str(b) for b in self.branches)
        if self.dilation > 1:
            paths += f" (dilation × {self.dilation})"
        norm = self.options.norm_layer
        norm = "" if norm == DEFAULT_NORM else f", norm={getattr(norm, '__name__', norm)}"
        return (
            f"{self.in_channels}, {self.out_channels}, stride={self.stride}, paths=[{paths}], "
            f"aggregation={self.aggregation.value}, d={self.attn_dim}{norm}"
        )


def _sum(tensors: list[torch.Tensor]) -> torch.Tensor:
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    return total


def _world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
