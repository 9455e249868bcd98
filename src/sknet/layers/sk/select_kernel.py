"""The select-kernel tail (CUDA, where the fused tail declines): each path finished by its own modules,
the attention by the layer's, and V = Σ_m a_m ⊙ u_m in one Triton pass forward and one backward
(:mod:`sknet.kernels.select_triton`) instead of M elementwise passes and a stacked gradient.

Where it runs: the fused tail declined (more than its path count, SyncBatchNorm or another norm, a hook
on the attention, a frozen BN in a training layer...) but the maps are CUDA tensors of ≤ 3 paths in one
dense layout and fp32/fp16/bf16, outside torch.compile (inductor fuses the plain tail's elementwise ops
itself). On an H100 the kernel matched the plain ops' results to 2.2e-6 (fp32, training;
../shared/reference/gpu-h100-2026-11-23.md).
"""

from __future__ import annotations

import torch

from sknet.kernels import select_triton
from sknet.layers.sk.select import select_paths
from sknet.layers.sk.split import Parts, finish_paths, pooled

NAME = "select-kernel"


def applies(parts: Parts, convs: list[torch.Tensor]) -> bool:
    return parts.select is not None and parts.fused and select_triton.use_triton(tuple(convs))


class _SelectKernel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attention: torch.Tensor, *paths: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(attention, *paths)
        return select_triton.select_forward(paths, attention)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        attention, *paths = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: recorded PyTorch ops, differentiable again
            weights = attention[..., None, None]
            grad_a = torch.stack([(grad_out * u).sum((2, 3)) for u in paths], dim=1)
            return (grad_a, *[grad_out * weights[:, m] for m in range(len(paths))])
        grad_a, grad_paths = select_triton.select_backward(grad_out, tuple(paths), attention)
        return (grad_a, *grad_paths)


def forward(parts: Parts, convs: list[torch.Tensor]) -> torch.Tensor:
    us = finish_paths(parts, convs)
    attention = parts.select(parts.fuse(pooled(us)))
    if not select_triton.use_triton(tuple(us)):  # a norm that changed dtype or layout
        return select_paths(us, attention, normalized=True)
    return _SelectKernel.apply(attention, *us)
