"""The lean tail: memory-lean, pass-lean training of the SK Fuse/Select steps on the CPU (eager mode).

A straightforward SK layer keeps, per path, the conv output (for BN's backward) *and* the ReLU output
(for ReLU's and the weighted sum's backward): 2·M feature maps per unit where ResNeXt keeps 2. Here each
path keeps only its conv output c_m and BN's per-channel batch statistics; u_m = ReLU(BN(c_m)) is computed
once in forward and recomputed, one elementwise pass, in backward.

Everything between the path convolutions and V — BN, ReLU, pooling, the Fuse/Select attention and the
weighted sum — is one autograd node (:class:`_SKTail`), so backward is planned as a whole instead of
node by node. Per path it makes one pass over the feature map fewer for each of:
  - the pooled descriptor's gradient: dL/ds / HW is broadcast into the ReLU gradient inside the same
    elementwise pass as a_m ⊙ dV (autograd would materialise it as a full map and then add it);
  - u_m is recomputed once and serves both dA = Σ_HW dV ⊙ u_m and the ReLU mask.
The small attention subgraph (Fuse: W, BN, ReLU; Select: A, softmax) is run through autograd inside the
node (its parameters are the node's inputs, so their gradients arrive like any other, DDP included).
Gradients are exactly those of the plain composition (tests compare both in float64). Higher-order
gradients (``create_graph=True``: Hessian-vector products, gradient penalties) replay the plain composition
inside backward, so they work too, at the plain path's cost; ``retain_graph=True`` works as usual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sknet.layers.sk.select import weighted_sum
from sknet.layers.sk.split import Parts

NAME = "lean"

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


def _bn_relu(c: torch.Tensor, weight, bias, mean, invstd) -> torch.Tensor:
    """ReLU(BN(c)) with given batch statistics: max((c − mean)·invstd·γ + β, 0), two passes, no autograd."""
    scale = (invstd * weight).view(1, -1, 1, 1)
    shift = (bias - mean * invstd * weight).view(1, -1, 1, 1)
    return torch.addcmul(shift, c, scale).clamp_min_(0)


class _SKTail(torch.autograd.Function):
    """(c_1..c_M, γ_m, β_m, attention parameters) → V = Σ_m a_m ⊙ ReLU(BN_m(c_m)), a = select(fuse(s)).

    Saves c_m and the BN batch statistics; the attention subgraph (N·C-sized tensors) is kept as built.
    """

    @staticmethod
    def forward(ctx, parts: Parts, m: int, *tensors: torch.Tensor) -> torch.Tensor:
        cs, weights, biases = tensors[:m], tensors[m : 2 * m], tensors[2 * m : 3 * m]
        us, stats = [], []
        s = None
        for c, bn in zip(cs, parts.norms, strict=True):
            out, mean, invstd = bn_train_forward(c, bn)
            u = out.clamp_min_(0)
            us.append(u)
            stats += [mean, invstd]
            # Fuse: mean(Σ U_m) = Σ mean(U_m): pool each path, never materialise U.
            pooled = u.mean((2, 3), keepdim=True)
            s = pooled if s is None else s.add_(pooled)
        s_leaf, attention = attention_subgraph(parts, s)
        ctx.save_for_backward(*cs, *weights, *biases, *stats, *tensors[3 * m :])
        ctx.graph = (s_leaf, attention)
        ctx.parts = parts
        ctx.m = m
        ctx.eps = [bn.eps for bn in parts.norms]
        return weighted_sum(tuple(us), attention.detach(), True)

    @staticmethod
    def backward(ctx, grad_v: torch.Tensor):
        m = ctx.m
        saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: backward itself must be differentiable
            cs, weights, biases, attn_params = saved[:m], saved[m : 2 * m], saved[2 * m : 3 * m], saved[5 * m :]
            grads = replay_tail_backward(ctx.parts, cs, weights, biases, attn_params, grad_v, ctx.needs_input_grad[2:])
            return (None, None, *grads)
        cs, weights, biases = saved[:m], saved[m : 2 * m], saved[2 * m : 3 * m]
        means, invstds, attn_params = saved[3 * m : 5 * m : 2], saved[3 * m + 1 : 5 * m : 2], saved[5 * m :]
        need_c, need_w, need_b = (ctx.needs_input_grad[2 + k * m : 2 + (k + 1) * m] for k in range(3))
        need_attn = ctx.needs_input_grad[2 + 3 * m :]
        # Kept (not cleared) so that a second backward through a retained graph works: it is N·C-sized.
        s_leaf, attention = ctx.graph
        a = attention.detach()
        us = [_bn_relu(cs[i], weights[i], biases[i], means[i], invstds[i]) for i in range(m)]

        # Select: dA_m = Σ_HW dV ⊙ u_m. On CPUs a fresh feature map costs more than a pass over one (page
        # faults), so one scratch map serves every product below.
        scratch = torch.empty_like(cs[0])
        grad_a = torch.stack([torch.mul(grad_v, u, out=scratch).sum((2, 3)) for u in us], dim=1)

        # Fuse/Select attention subgraph: dL/ds and the attention parameters' gradients.
        wanted = [p for p, need in zip(attn_params, need_attn, strict=True) if need]
        grad_s, grad_wanted = None, [None] * len(wanted)
        if attention.requires_grad:
            grad_s, *grad_wanted = torch.autograd.grad(
                attention, [s_leaf, *wanted], grad_a, retain_graph=True, allow_unused=True
            )
        grad_wanted = iter(grad_wanted)
        grad_attn = [next(grad_wanted) if need else None for need in need_attn]

        grad_cs, grad_ws, grad_bs = [None] * m, [None] * m, [None] * m
        pool_grad = None if grad_s is None else grad_s / (grad_v.shape[2] * grad_v.shape[3])
        for i in range(m):
            mask = [need_c[i], need_w[i], need_b[i]]
            if not any(mask):
                continue
            # dL/du_m = a_m ⊙ dV + (dL/ds)/HW (the pooled descriptor's gradient, broadcast), one pass.
            if pool_grad is None:
                grad_u = torch.mul(grad_v, a[:, i, :, None, None], out=scratch)
            else:
                grad_u = torch.addcmul(pool_grad, grad_v, a[:, i, :, None, None], out=scratch)
            grad_z = _RELU_BACKWARD.grad_input(grad_u, us[i], 0, grad_input=grad_u)  # ReLU mask, in place
            # dL/dc_m is written over the recomputed u_m, which is not needed any more.
            grad_c, grad_w, grad_b = _BN_BACKWARD.out(
                grad_z,
                cs[i],
                weights[i],
                None,
                None,
                means[i],
                invstds[i],
                True,
                ctx.eps[i],
                mask,
                out0=us[i],
                out1=torch.empty_like(weights[i]),
                out2=torch.empty_like(weights[i]),
            )
            us[i] = None
            grad_cs[i] = grad_c if need_c[i] else None
            grad_ws[i] = grad_w if need_w[i] else None
            grad_bs[i] = grad_b if need_b[i] else None
        return (None, None, *grad_cs, *grad_ws, *grad_bs, *grad_attn)


def attention_subgraph(parts: Parts, s: torch.Tensor):
    """(leaf standing in for s, attention): the N·C-sized Fuse/Select subgraph run through autograd from a
    leaf, so that backward can ask it for dL/ds and the attention parameters' gradients (forward hooks on
    the select module fire as usual)."""
    with torch.enable_grad():
        s_leaf = s.detach().requires_grad_(True)
        return s_leaf, parts.select(parts.fuse(s_leaf))


def replay_paths(parts: Parts, cs, weights, biases) -> list[torch.Tensor]:
    """u_m = ReLU(BN_m(c_m)) with batch statistics through autograd, running statistics untouched (for the
    replays of create_graph=True backward passes)."""
    return [
        F.batch_norm(c, None, None, w, b, training=True, eps=bn.eps).relu()
        for c, w, b, bn in zip(cs, weights, biases, parts.norms, strict=True)
    ]


def replay_tail_backward(
    parts: Parts,
    cs: tuple[torch.Tensor, ...],
    weights: tuple[torch.Tensor, ...],
    biases: tuple[torch.Tensor, ...],
    attn_params: tuple[torch.Tensor, ...],
    grad_v: torch.Tensor,
    needs: tuple[bool, ...],
) -> list[torch.Tensor | None]:
    """Gradients of the tail (inputs c_m, γ_m, β_m, attention parameters, in the order of `needs`) through
    the plain, differentiable composition (create_graph=True). The fuse step's BN updates copies of the
    running statistics, and forward hooks on `select` (record_attention) do not see the batch twice.
    """
    us = replay_paths(parts, cs, weights, biases)
    s = sum(u.mean((2, 3), keepdim=True) for u in us)
    # Running statistics go to copies; calling select's .forward skips its hooks.
    buffers = {name: b.clone() for name, b in parts.fuse.named_buffers()}
    attention = parts.select.forward(torch.func.functional_call(parts.fuse, buffers, (s,), strict=False))
    v = sum(u * attention[:, i, :, None, None] for i, u in enumerate(us))
    inputs = [*cs, *weights, *biases, *attn_params]
    wanted = [t for t, need in zip(inputs, needs, strict=True) if need]
    grads = iter(torch.autograd.grad(v, wanted, grad_v, create_graph=True, allow_unused=True))
    return [next(grads) if need else None for need in needs]


def applies(parts: Parts, convs: list[torch.Tensor]) -> bool:
    """Plain BatchNorm2d + ReLU paths with attention, in eager training on the CPU, fp32/fp64 without
    autocast, the layer allowing it (``SKConv2d.lean_training``).

    It is a CPU path: on CUDA, where the fused tail declines (a hook, a dtype it does not take), the plain
    composition runs, because on an H100 this path trained slower than the plain module in fp32 (0.45× vs
    timm's plain SK module at 0.54× of ResNeXt-50: ../shared/reference/gpu-h100-2026-11-23.md). Under
    torch.compile the plain composition is used too: the compiler fuses its elementwise passes and chooses
    what to recompute itself.
    """
    c = convs[0]
    if parts.select is None or not parts.training or not parts.lean or c.device.type != "cpu":
        return False
    if not torch.is_grad_enabled() or torch.is_autocast_enabled(c.device.type) or torch.compiler.is_compiling():
        return False
    for bn, act in zip(parts.norms, parts.acts, strict=True):
        if type(bn) is not nn.BatchNorm2d or not bn.training or not bn.affine or not bn.track_running_stats:
            return False
        if type(act) is not nn.ReLU:  # the recompute hard-codes ReLU
            return False
        if bn.weight.dtype != c.dtype or c.dtype not in (torch.float32, torch.float64):
            return False
    return True


def forward(parts: Parts, convs: list[torch.Tensor]) -> torch.Tensor:
    """V of an SK layer in training (eager autograd), keeping only the path conv outputs for backward."""
    weights = [bn.weight for bn in parts.norms]
    biases = [bn.bias for bn in parts.norms]
    attn_params = [*parts.fuse.parameters(), *parts.select.parameters()]
    return _SKTail.apply(parts, len(convs), *convs, *weights, *biases, *attn_params)
