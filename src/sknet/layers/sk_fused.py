"""The SK tail on fused Triton kernels (CUDA): one autograd node from the path convolutions to V.

Same equations as the plain composition in :class:`~sknet.layers.sk_conv.SKConv2d` and the CPU lean path
(:mod:`sknet.layers.sk_recompute`); the kernels and the algebra that lets backward read each path twice
are in :mod:`sknet.kernels.sk_tail_triton`. What stays in PyTorch here is N·C-sized: BatchNorm's batch
statistics from per-sample moments, the running-statistics update, the Fuse/Select attention (through
autograd, so hooks on ``select`` fire and its parameters get their gradients like any other) and the
per-channel sums of the backward pass. No host–device synchronisation anywhere.

In evaluation the same pool and select kernels run with BN's running statistics (or, after
``fuse_for_inference``, with the bias already in the convolution).
"""

from __future__ import annotations

import torch
from torch import nn

from sknet.kernels import sk_tail_triton as kernels
from sknet.layers.sk_recompute import _replay_backward, attention_subgraph

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def fused_tail_ok(sk: nn.Module, x: torch.Tensor) -> bool:
    """The fused tail applies to SK attention layers with ≤ 3 paths of conv → BatchNorm2d (or folded) →
    ReLU, on a device the kernels run on, in eager mode (torch.compile fuses the plain composition itself)."""
    if torch.compiler.is_compiling():  # first: nothing below needs tracing
        return False
    if sk.select is None or len(sk.paths) > kernels.MAX_PATHS or x.dtype not in SUPPORTED_DTYPES:
        return False
    if not kernels.available(x):
        return False
    for path in sk.paths:
        if type(getattr(path, "act", None)) is not nn.ReLU:
            return False
        bn = path.bn
        if type(bn) is nn.Identity:  # folded for inference: no statistics to apply
            if sk.training:
                return False
        elif type(bn) is not nn.BatchNorm2d or not bn.affine or bn.training != sk.training:
            return False  # SyncBatchNorm, frozen BN in a training layer and the like: the plain path
        elif not bn.training and not bn.track_running_stats:
            return False
    if sk.training:
        return True
    # Evaluation: the forward-only kernels; a gradient through an eval-mode layer takes the plain path.
    return not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in sk.parameters())))


def _chan_table(cs, means, invstds, gammas, betas) -> torch.Tensor:
    """The kernels' per-path, per-channel table (MAX_PATHS, ROWS, C); rows of unused paths are zero."""
    acc = kernels.acc_dtype(cs[0].dtype)
    chan = torch.zeros(kernels.MAX_PATHS, kernels.ROWS, cs[0].shape[1], device=cs[0].device, dtype=acc)
    m = len(cs)
    chan[:m, kernels.MEAN] = torch.stack(means).to(acc)
    chan[:m, kernels.INVSTD] = torch.stack(invstds).to(acc)
    chan[:m, kernels.GAMMA] = torch.stack(gammas).to(acc)
    chan[:m, kernels.BETA] = torch.stack(betas).to(acc)
    return chan


@torch.no_grad()
def _update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var_unbiased: torch.Tensor) -> None:
    """What nn.BatchNorm2d does in training, with tensors only (a None momentum's 1/t stays on the device)."""
    if not bn.track_running_stats:
        return
    bn.num_batches_tracked.add_(1)
    if bn.momentum is None:  # cumulative moving average
        factor = 1.0 / bn.num_batches_tracked.to(mean.dtype)
    else:
        factor = torch.tensor(bn.momentum, dtype=mean.dtype, device=mean.device)
    bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), factor.to(bn.running_mean.dtype))
    bn.running_var.lerp_(var_unbiased.to(bn.running_var.dtype), factor.to(bn.running_var.dtype))


def _batch_stats(sk: nn.Module, cs: tuple[torch.Tensor, ...]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per path: the batch mean and 1/σ over (N, H, W), from per-sample moments; updates running stats."""
    n, _, h, w = cs[0].shape
    count = n * h * w
    moments = kernels.moments(cs)  # (N, M, 2, C)
    sample_means, sample_m2 = moments[:, :, 0], moments[:, :, 1]
    means = sample_means.mean(0)  # (M, C)
    m2 = sample_m2.sum(0) + (h * w) * (sample_means - means).square().sum(0)  # Chan's combination over N
    out_means, out_invstds = [], []
    for i, path in enumerate(sk.paths):
        var = m2[i] / count
        out_means.append(means[i])
        out_invstds.append(torch.rsqrt(var + path.bn.eps))
        _update_running_stats(path.bn, means[i], m2[i] / max(count - 1, 1))
    return out_means, out_invstds


class _FusedSKTail(torch.autograd.Function):
    """(c_1..c_M, γ_m, β_m, attention parameters) → V. Saves c_m and N·C-sized tensors only."""

    @staticmethod
    def forward(ctx, sk: nn.Module, m: int, *tensors: torch.Tensor) -> torch.Tensor:
        first = kernels.walkable(tensors[0])
        cs = tuple(kernels.like(first, c) for c in tensors[:m])
        gammas, betas = tensors[m : 2 * m], tensors[2 * m : 3 * m]
        means, invstds = _batch_stats(sk, cs)
        chan = _chan_table(cs, means, invstds, gammas, betas)
        n, c = cs[0].shape[:2]
        s = kernels.pool(cs, chan).view(n, c, 1, 1)
        # The attention subgraph through autograd, from a leaf standing in for s (fp32 unless fp64).
        s_leaf, attention = attention_subgraph(sk, s, torch.float64 if cs[0].dtype == torch.float64 else torch.float32)
        ctx.save_for_backward(
            *cs, *gammas, *betas, *[t for pair in zip(means, invstds, strict=True) for t in pair], *tensors[3 * m :]
        )
        ctx.graph = (s_leaf, attention)
        ctx.sk, ctx.m, ctx.chan = sk, m, chan
        ctx.eps = [path.bn.eps for path in sk.paths]
        return kernels.select(cs, chan, attention.detach())

    @staticmethod
    def backward(ctx, grad_v: torch.Tensor):
        m = ctx.m
        saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: backward itself must be differentiable
            return (None, None, *_replay_backward(ctx, saved, grad_v))
        cs, gammas, betas, attn_params = saved[:m], saved[m : 2 * m], saved[2 * m : 3 * m], saved[5 * m :]
        need_attn = ctx.needs_input_grad[2 + 3 * m :]
        chan = ctx.chan.clone()  # a second backward through a retained graph starts from the forward table
        acc = chan.dtype
        n, c, h, w = cs[0].shape
        s_leaf, attention = ctx.graph
        a = attention.detach().to(acc)

        sums = kernels.backward_sums(grad_v, cs, chan)  # (N, M, 4, C)
        p1, p2, p3, p4 = sums.unbind(2)
        gamma = torch.stack(gammas).to(acc)  # (M, C)
        beta = torch.stack(betas).to(acc)
        grad_a = gamma * p2 + beta * p1  # Σ_HW dV ⊙ u_m

        wanted = [p for p, need in zip(attn_params, need_attn, strict=True) if need]
        grad_s, grad_wanted = None, [None] * len(wanted)
        if attention.requires_grad:
            grad_s, *grad_wanted = torch.autograd.grad(
                attention, [s_leaf, *wanted], grad_a.to(attention.dtype), retain_graph=True, allow_unused=True
            )
        grad_wanted = iter(grad_wanted)
        grad_attn = [next(grad_wanted) if need else None for need in need_attn]

        k = torch.zeros(n, c, device=a.device, dtype=acc) if grad_s is None else grad_s.view(n, c).to(acc) / (h * w)
        grad_beta = (a * p1 + k[:, None] * p3).sum(0)  # (M, C)
        grad_gamma = (a * p2 + k[:, None] * p4).sum(0)
        chan[:m, kernels.DBETA_MEAN] = grad_beta / (n * h * w)
        chan[:m, kernels.DGAMMA_MEAN] = grad_gamma / (n * h * w)
        grad_cs = kernels.backward_apply(grad_v, cs, chan, a, k)

        def pick(values, needs, like):
            return [v.to(t.dtype) if need else None for v, need, t in zip(values, needs, like, strict=True)]

        grads_c = [g if need else None for g, need in zip(grad_cs, ctx.needs_input_grad[2 : 2 + m], strict=True)]
        grads_w = pick(grad_gamma.unbind(0), ctx.needs_input_grad[2 + m : 2 + 2 * m], gammas)
        grads_b = pick(grad_beta.unbind(0), ctx.needs_input_grad[2 + 2 * m : 2 + 3 * m], betas)
        return (None, None, *grads_c, *grads_w, *grads_b, *grad_attn)


def sk_fused_forward(sk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """V of an SK layer through the fused kernels; check :func:`fused_tail_ok` first."""
    if sk.training:
        cs = [path.conv(x) for path in sk.paths]
        gammas = [path.bn.weight for path in sk.paths]
        betas = [path.bn.bias for path in sk.paths]
        attn_params = [*sk.fuse.parameters(), *sk.select.parameters()]
        return _FusedSKTail.apply(sk, len(cs), *cs, *gammas, *betas, *attn_params)
    return _eval_forward(sk, x)


@torch.no_grad()
def _eval_forward(sk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    cs = [path.conv(x) for path in sk.paths]
    first = kernels.walkable(cs[0])
    cs = tuple(kernels.like(first, c) for c in cs)
    means, invstds, gammas, betas = [], [], [], []
    for path, c in zip(sk.paths, cs, strict=True):
        bn = path.bn
        if type(bn) is nn.Identity:  # BN folded into the conv (bias included in c)
            zero = torch.zeros(c.shape[1], device=c.device)
            means.append(zero), invstds.append(zero + 1), gammas.append(zero + 1), betas.append(zero)
            continue
        mean, var = (bn.running_mean, bn.running_var) if bn.track_running_stats else (None, None)
        means.append(mean)
        invstds.append(torch.rsqrt(var + bn.eps))
        gammas.append(bn.weight)
        betas.append(bn.bias)
    chan = _chan_table(cs, means, invstds, gammas, betas)
    n, c = cs[0].shape[:2]
    s = kernels.pool(cs, chan).view(n, c, 1, 1)
    s = s.to(cs[0].dtype if cs[0].dtype == torch.float64 else torch.float32)
    attention = sk.select(sk.fuse(s))
    return kernels.select(cs, chan, attention)
