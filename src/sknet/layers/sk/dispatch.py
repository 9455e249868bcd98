"""Which tail finishes an SK layer: the first in :data:`TAILS` whose ``applies(parts, convs)`` holds.

One Split (:meth:`SKConv2d.split <sknet.layers.sk.conv.SKConv2d.split>`, the path convolutions) feeds
one of four implementations of the same equations (:mod:`sknet.layers.sk.split`'s docstring states them):

=============  ==========================================================================================
fused          CUDA, eager or compiled: Triton kernels for everything after the path convolutions
               (BN statistics, pooled descriptor, weighted sum, backward). SKNet-50 on an H100, bf16:
               the plain composition trained at 0.51–0.64× of ResNeXt-50, the two paths alone bound it at
               0.76× (../shared/reference/gpu-h100-2026-11-23.md); this tail exists to close that gap.
select-kernel  CUDA where ``fused`` declines (> 3 paths excluded, SyncBatchNorm, hooks on the attention,
               frozen BN in a training layer): the paths and attention by their own modules, V in one
               Triton pass instead of M elementwise passes.
lean           CPU eager training, fp32/fp64, BatchNorm2d + ReLU paths: one autograd node that keeps only
               the convolutions' outputs. On 2 CPU cores: activation memory 1.31× → 1.11× of ResNeXt-50,
               an SK layer's training step 207 vs 237 ms (plain autograd) at 128 × 56²
               (benchmarks/RESULTS.md, 2026-11-22). On an H100 it trained slower than the plain
               composition (0.45× vs 0.54× of ResNeXt-50, fp32): the CPU's alone.
plain          everything else (CPU inference, autocast on the CPU, torch.fx, torch.compile on the CPU,
               any norm or activation): PyTorch ops, the readable reference.
=============  ==========================================================================================

A layer opts out of the kernels with ``fused_tail = False`` (both CUDA tails; ``SKNET_FUSED=0`` for every
layer) and out of the lean tail with ``lean_training = False`` (gradient checkpointing sets it: the lean
backward re-enters autograd, and inside ``torch.utils.checkpoint`` each re-entry would recompute the stage).
"""

from __future__ import annotations

import torch

from sknet.layers.sk import fused, lean, plain, select_kernel
from sknet.layers.sk.split import Parts

TAILS = (fused, select_kernel, lean, plain)  # tried in this order; plain applies to everything


def choose(parts: Parts, convs: list[torch.Tensor]):
    """The tail module that finishes this call (its ``NAME``, ``applies``, ``forward``)."""
    return next(tail for tail in TAILS if tail.applies(parts, convs))


def run_tail(parts: Parts, convs: list[torch.Tensor]) -> torch.Tensor:
    """V (N, C, H', W') from the Split's outputs c_m (N, C, H', W') through the first tail that applies."""
    return choose(parts, convs).forward(parts, convs)
