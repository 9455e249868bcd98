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

from sknet.layers.select import weighted_sum

_BN_BACKWARD = torch.ops.aten.native_batch_norm_backward


def batch_stats(c: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch mean and 1/sqrt(var + eps) of `c` per channel; updates `bn`'s running statistics exactly
    as nn.BatchNorm2d does in training (momentum, unbiased running variance, num_batches_tracked)."""
    with torch.no_grad():
        var, mean = torch.var_mean(c, dim=(0, 2, 3), unbiased=False)
        invstd = torch.rsqrt(var + bn.eps)
        if bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            n = c.numel() // c.shape[1]
            bn.running_mean.lerp_(mean, momentum)
            bn.running_var.lerp_(var * (n / max(n - 1, 1)), momentum)
    return mean, invstd


def _preact(c: torch.Tensor, weight, bias, mean, invstd) -> torch.Tensor:
    """BN(c) with batch statistics: (c − mean)·invstd·γ + β."""
    scale = (invstd * weight).view(1, -1, 1, 1)
    shift = (bias - mean * invstd * weight).view(1, -1, 1, 1)
    return torch.addcmul(shift, c, scale)


def _bn_relu_backward(grad_u, c, weight, bias, mean, invstd, eps, mask):
    """(dL/dc, dL/dγ, dL/dβ) of u = ReLU(BN_train(c)) given dL/du."""
    z = _preact(c, weight, bias, mean, invstd)
    grad_z = grad_u.masked_fill(z <= 0, 0)
    return _BN_BACKWARD(grad_z, c, weight, None, None, mean, invstd, True, eps, mask)


class _PooledPath(torch.autograd.Function):
    """mean_HW(u) (N, C) with u = ReLU(BN(c)) precomputed; backward recomputes u from c."""

    @staticmethod
    def forward(ctx, c, weight, bias, mean, invstd, eps, u):
        ctx.save_for_backward(c, weight, bias, mean, invstd)
        ctx.eps = eps
        return u.mean((2, 3))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_s):
        c, weight, bias, mean, invstd = ctx.saved_tensors
        grad_u = (grad_s / (c.shape[2] * c.shape[3]))[..., None, None].expand_as(c)
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        grad_c, grad_w, grad_b = _bn_relu_backward(grad_u, c, weight, bias, mean, invstd, ctx.eps, mask)
        return grad_c, grad_w, grad_b, None, None, None, None


class _SelectFromConv(torch.autograd.Function):
    """V = Σ_m a_m ⊙ u_m with u_m = ReLU(BN(c_m)) precomputed; keeps only c_m and statistics."""

    @staticmethod
    def forward(ctx, attention, normalized, eps, *tensors):
        m = attention.shape[1]
        cs, ws, bs, means, invstds, us = (tensors[i * m : (i + 1) * m] for i in range(6))
        ctx.save_for_backward(attention, *cs, *ws, *bs, *means, *invstds)
        ctx.m, ctx.eps = m, eps
        return weighted_sum(tuple(us), attention, normalized)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_v):
        m = ctx.m
        attention, *rest = ctx.saved_tensors
        cs, ws, bs, means, invstds = (rest[i * m : (i + 1) * m] for i in range(5))
        grads_c, grads_w, grads_b, grads_a = [], [], [], []
        for i in range(m):
            z = _preact(cs[i], ws[i], bs[i], means[i], invstds[i])
            u = z.clamp_min(0)
            if ctx.needs_input_grad[0]:
                grads_a.append((grad_v * u).sum((2, 3)))
            del u
            grad_z = (grad_v * attention[:, i, :, None, None]).masked_fill_(z <= 0, 0)
            del z
            gc, gw, gb = _BN_BACKWARD(
                grad_z, cs[i], ws[i], None, None, means[i], invstds[i], True, ctx.eps, [True, True, True]
            )
            grads_c.append(gc)
            grads_w.append(gw)
            grads_b.append(gb)
        grad_a = torch.stack(grads_a, dim=1) if grads_a else None
        return (grad_a, None, None, *grads_c, *grads_w, *grads_b, *([None] * (3 * m)))


def lean_paths_forward(paths: nn.ModuleList, x: torch.Tensor):
    """Run every path's conv, then BN (training statistics) and ReLU without keeping the ReLU outputs.

    Returns (pooled descriptor s (N, C, 1, 1) with autograd, a function V = select(attention)).
    """
    cs, ws, bs, means, invstds, us = [], [], [], [], [], []
    s = None
    eps = paths[0].bn.eps
    for path in paths:
        c = path.conv(x)
        bn = path.bn
        mean, invstd = batch_stats(c, bn)
        with torch.no_grad():
            u = _preact(c, bn.weight, bn.bias, mean, invstd).clamp_min_(0)
        pooled = _PooledPath.apply(c, bn.weight, bn.bias, mean, invstd, bn.eps, u)
        s = pooled if s is None else s + pooled
        for store, value in zip(
            (cs, ws, bs, means, invstds, us), (c, bn.weight, bn.bias, mean, invstd, u), strict=True
        ):
            store.append(value)

    def select(attention: torch.Tensor, normalized: bool) -> torch.Tensor:
        return _SelectFromConv.apply(attention, normalized, eps, *cs, *ws, *bs, *means, *invstds, *us)

    return s[..., None, None], select


def lean_path_ok(paths: nn.ModuleList, x: torch.Tensor) -> bool:
    """The lean path applies to plain BatchNorm2d paths in training, fp32/fp64 without autocast, one eps."""
    if not torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type):
        return False
    eps = None
    for path in paths:
        bn = getattr(path, "bn", None)
        if type(bn) is not nn.BatchNorm2d or not bn.training or not bn.affine or not bn.track_running_stats:
            return False
        if bn.weight.dtype != x.dtype or x.dtype not in (torch.float32, torch.float64):
            return False
        if eps is not None and bn.eps != eps:
            return False
        eps = bn.eps
    return True
