"""The SK layer's fast tails: optional implementations of what follows the Split's convolutions (norms, ReLUs,
Fuse, Select), each faster than :meth:`SKConv2d.forward <sknet.layers.selective_kernel.SKConv2d.forward>`'s
own lines where it applies, and equal to them (tests/layers/test_sk_tails.py holds each to that).

Every tail implements :class:`Tail`: a ``name``, the ``reason`` it exists, where its ``gain`` is measured,
``supports(layer, convs)`` (None when it runs this call, else why not: it reads the layer's
:meth:`~sknet.layers.selective_kernel.SKConv2d.contract` and the tensors, never the layer's classes) and
``forward(layer, convs)``. :data:`TAILS` lists them in the order they are tried; a layer whose ``tails``
attribute names some only tries those (``()``: none).

=======  =============================================================================================
fused    CUDA: Triton kernels from the path convolutions to V, forward and backward (training, evaluation,
         a gradient through an evaluation-mode layer), eager or compiled; paths of batch-statistics or
         fixed-map norms with ReLU, M ≤ 3; with a gradient, the attention's closed-form derivative.
lean     CPU eager training in fp32/fp64 of BatchNorm2d + ReLU paths: one autograd node that keeps only
         the path convolutions' outputs.
(none)   everything else — CPU inference, autocast on the CPU, torch.fx, torch.compile on the CPU, other
         norms (GroupNorm, SyncBatchNorm in training), hooks on the attention: the forward's own lines.
=======  =============================================================================================
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from sknet.errors import ConfigError
from sknet.layers.sk_tails.fused import FusedTail
from sknet.layers.sk_tails.lean import LeanTail


class Tail(Protocol):
    """One fast implementation of an SK layer after its Split. `convs`: the M path convolutions' outputs c_m,
    each (N, C, H', W'); ``forward`` returns V (N, C, H', W')."""

    name: str
    reason: str  # why it exists: what the plain forward costs where it applies
    gain: str  # where its gain over the plain forward is measured (figures: benchmarks/RESULTS.md)

    def supports(self, layer: nn.Module, convs: list[torch.Tensor]) -> str | None: ...

    def forward(self, layer: nn.Module, convs: list[torch.Tensor]) -> torch.Tensor: ...


TAILS: tuple[Tail, ...] = (FusedTail(), LeanTail())  # tried in this order


def find(layer: nn.Module, convs: list[torch.Tensor]) -> Tail | None:
    """The first tail of :data:`TAILS` the layer allows (its ``tails``) that supports this call; None: the
    layer's own forward runs it (always so under torch.fx symbolic tracing: no tensors to look at)."""
    if isinstance(convs[0], torch.fx.Proxy):
        return None
    allowed = layer.tails
    return next((t for t in TAILS if (allowed is None or t.name in allowed) and t.supports(layer, convs) is None), None)


def tail_names(names: object) -> tuple[str, ...] | None:
    """`names` as an SK layer's ``tails`` setting: None, or a tuple of names of :data:`TAILS` (ConfigError
    naming an unknown one)."""
    if names is None:
        return None
    names = (names,) if isinstance(names, str) else tuple(names)
    known = [tail.name for tail in TAILS]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"unknown SK tail {', '.join(map(repr, unknown))}: the tails are {', '.join(known)}")
    return names


def reasons(layer: nn.Module, convs: list[torch.Tensor]) -> dict[str, str | None]:
    """Every tail's answer for this call: None where it would run, else why it declines."""
    return {tail.name: tail.supports(layer, convs) for tail in TAILS}


__all__ = ["TAILS", "FusedTail", "LeanTail", "Tail", "find", "reasons", "tail_names"]
