"""Memory-lean training path of the SK Split/Fuse/Select steps.

A straightforward SK layer keeps, per path, the conv output (for BN's backward) *and* the ReLU output
(for ReLU's and the weighted sum's backward): 2·M feature maps per unit where ResNeXt keeps 2. Here each
path keeps only its conv output c_m and BN's per-channel batch statistics; u_m = ReLU(BN(c_m)) is computed
once in forward and recomputed, one elementwise pass, in backward. Gradients are exactly those of
BN → ReLU → (pool, weighted sum): BN's backward is linear in its incoming gradient, so each of the two
consumers of u_m (the pooled descriptor and the weighted sum) applies it and autograd adds the results.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from sknet.kernels import select_triton
from sknet.layers.select import weighted_sum

_BN_FORWARD = torch.ops.aten.native_batch_norm
_BN_BACKWARD = torch.ops.aten.native_batch_norm_backward
_RELU_BACKWARD = torch.ops.aten.threshold_backward


def bn_train_forward(c: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BN(c) with batch statistics and the saved (mean, invstd), without autograd; updates `bn`'s running
    statistics exactly as nn.BatchNorm2d does in training (same kernel, same momentum rule)."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    with torch.no_grad():
        if bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(bn.num_batches_tracked)
        return _BN_FORWARD(c, bn.weight, bn.bias, bn.running_mean, bn.running_var, True, momentum, bn.eps)


def _preact(c: torch.Tensor, weight, bias, mean, invstd) -> torch.Tensor:
    """BN(c) with batch statistics: (c − mean)·invstd·γ + β."""
    scale = (invstd * weight).view(1, -1, 1, 1)
    shift = (bias - mean * invstd * weight).view(1, -1, 1, 1)
    return torch.addcmul(shift, c, scale)


class _BNReLU(torch.autograd.Function):
    """u = ReLU(BN_train(c)); keeps c and the batch statistics, not u. Returns (u, mean, invstd)."""

    @staticmethod
    def forward(ctx, c, weight, bias, bn: nn.BatchNorm2d):
        out, mean, invstd = bn_train_forward(c, bn)
        u = out.clamp_min_(0)
        ctx.save_for_backward(c, weight, bias, mean, invstd)
        ctx.eps = bn.eps
        ctx.mark_non_differentiable(mean, invstd)
        return u, mean, invstd

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_u, _grad_mean, _grad_invstd):
        c, weight, bias, mean, invstd = ctx.saved_tensors
        grad_z = _RELU_BACKWARD(grad_u, _preact(c, weight, bias, mean, invstd), 0)
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        grad_c, grad_w, grad_b = _BN_BACKWARD(grad_z, c, weight, None, None, mean, invstd, True, ctx.eps, mask)
        return grad_c, grad_w, grad_b, None


class _SelectRecompute(torch.autograd.Function):
    """V = Σ_m a_m ⊙ u_m. Takes u_m as inputs (their gradient a_m ⊙ dV flows to _BNReLU) but keeps
    only c_m and BN statistics, recomputing u_m for the attention gradient Σ_HW dV ⊙ u_m."""

    @staticmethod
    def forward(ctx, attention, normalized, *tensors):
        m = attention.shape[1]
        us, cs, ws, bs, means, invstds = (tensors[i * m : (i + 1) * m] for i in range(6))
        ctx.save_for_backward(attention, *cs, *ws, *bs, *means, *invstds)
        ctx.m = m
        return weighted_sum(tuple(us), attention, normalized)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_v):
        m = ctx.m
        attention, *rest = ctx.saved_tensors
        cs, ws, bs, means, invstds = (rest[i * m : (i + 1) * m] for i in range(5))
        if select_triton.use_triton(tuple(cs), attention):  # CUDA: dU and dA in one fused pass
            us = tuple(_preact(cs[i], ws[i], bs[i], means[i], invstds[i]).clamp_min_(0) for i in range(m))
            grad_a, grad_us = select_triton.select_backward(grad_v, us, attention)
            return (grad_a, None, *grad_us, *([None] * (5 * m)))
        grad_a = None
        if ctx.needs_input_grad[0]:
            grad_a = torch.stack(
                [
                    (grad_v * _preact(cs[i], ws[i], bs[i], means[i], invstds[i]).clamp_min_(0)).sum((2, 3))
                    for i in range(m)
                ],
                dim=1,
            )
        grad_us = [grad_v * attention[:, i, :, None, None] if ctx.needs_input_grad[2 + i] else None for i in range(m)]
        return (grad_a, None, *grad_us, *([None] * (5 * m)))


def lean_paths_forward(paths: nn.ModuleList, x: torch.Tensor):
    """Every path's conv → BN (training statistics) → ReLU, keeping only conv outputs for backward.

    Returns (pooled descriptor s (N, C, 1, 1), a function V = select(attention, normalized)).
    """
    us, cs, ws, bs, means, invstds = [], [], [], [], [], []
    s = None
    for path in paths:
        c = path.conv(x)
        bn = path.bn
        u, mean, invstd = _BNReLU.apply(c, bn.weight, bn.bias, bn)
        # Fuse: mean(Σ U_m) = Σ mean(U_m); the mean's backward keeps nothing.
        pooled = u.mean((2, 3), keepdim=True)
        s = pooled if s is None else s + pooled
        for store, value in zip(
            (us, cs, ws, bs, means, invstds), (u, c, bn.weight, bn.bias, mean, invstd), strict=True
        ):
            store.append(value)

    def select(attention: torch.Tensor, normalized: bool) -> torch.Tensor:
        return _SelectRecompute.apply(attention, normalized, *us, *cs, *ws, *bs, *means, *invstds)

    return s, select


def lean_path_ok(paths: nn.ModuleList, x: torch.Tensor) -> bool:
    """The lean path applies to plain BatchNorm2d paths in training, fp32/fp64 without autocast, one eps."""
    if not torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type):
        return False
    eps = None
    for path in paths:
        bn = getattr(path, "bn", None)
        if type(bn) is not nn.BatchNorm2d or not bn.training or not bn.affine or not bn.track_running_stats:
            return False
        if type(getattr(path, "act", None)) is not nn.ReLU:  # the recompute hard-codes ReLU
            return False
        if bn.weight.dtype != x.dtype or x.dtype not in (torch.float32, torch.float64):
            return False
        if eps is not None and bn.eps != eps:
            return False
        eps = bn.eps
    return True
