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
The small attention subgraph (Fuse: W, BN, ReLU; Select: A, softmax) is N·C-sized: backward runs it again
from the saved descriptor s, through autograd (its parameters are the node's inputs, so their gradients
arrive like any other, DDP included). Running it in backward, not keeping forward's graph, means the node
keeps nothing that torch.utils.checkpoint's hooks would have to recompute a second time. Gradients are
exactly those of the plain forward (tests compare both in float64). Higher-order gradients
(``create_graph=True``) replay the plain forward inside backward, at its cost; ``retain_graph=True`` works.
"""

from __future__ import annotations

import torch
from torch import nn

from sknet.layers.norm import NormKind
from sknet.layers.sk_tails.attention import Modules, replay_attention, replay_tail_backward
from sknet.layers.weighted_sum import _accumulate

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

    Saves c_m, the BN batch statistics and the N·C-sized s and a.
    """

    @staticmethod
    def forward(ctx, modules: Modules, m: int, *tensors: torch.Tensor) -> torch.Tensor:
        cs, weights, biases = tensors[:m], tensors[m : 2 * m], tensors[2 * m : 3 * m]
        us, stats = [], []
        s = None
        for c, bn in zip(cs, modules.norms, strict=True):
            out, mean, invstd = bn_train_forward(c, bn)
            u = out.clamp_min_(0)
            us.append(u)
            stats += [mean, invstd]
            # Fuse: mean(Σ U_m) = Σ mean(U_m): pool each path, never materialise U.
            pooled = u.mean((2, 3), keepdim=True)
            s = pooled if s is None else s.add_(pooled)
        attention = modules.select(modules.fuse(s))  # grad mode is off here; backward runs it again
        ctx.save_for_backward(*cs, *weights, *biases, *stats, s, attention, *tensors[3 * m :])
        ctx.modules = modules
        ctx.m = m
        ctx.eps = [bn.eps for bn in modules.norms]
        return _accumulate(tuple(us), attention, True)

    @staticmethod
    def backward(ctx, grad_v: torch.Tensor):
        m = ctx.m
        saved = ctx.saved_tensors
        cs, weights, biases, attn_params = saved[:m], saved[m : 2 * m], saved[2 * m : 3 * m], saved[5 * m + 2 :]
        if torch.is_grad_enabled():  # create_graph=True: backward itself must be differentiable
            grads = replay_tail_backward(
                ctx.modules, cs, weights, biases, attn_params, grad_v, ctx.needs_input_grad[2:]
            )
            return (None, None, *grads)
        means, invstds = saved[3 * m : 5 * m : 2], saved[3 * m + 1 : 5 * m : 2]
        s, a = saved[5 * m], saved[5 * m + 1]
        need_c, need_w, need_b = (ctx.needs_input_grad[2 + k * m : 2 + (k + 1) * m] for k in range(3))
        need_attn = ctx.needs_input_grad[2 + 3 * m :]
        us = [_bn_relu(cs[i], weights[i], biases[i], means[i], invstds[i]) for i in range(m)]

        # Select: dA_m = Σ_HW dV ⊙ u_m. On CPUs a fresh feature map costs more than a pass over one (page
        # faults), so one scratch map serves every product below.
        scratch = torch.empty_like(cs[0])
        grad_a = torch.stack([torch.mul(grad_v, u, out=scratch).sum((2, 3)) for u in us], dim=1)

        # Fuse/Select attention, run again from s (the same values as forward's): dL/ds and the attention
        # parameters' gradients.
        wanted = [p for p, need in zip(attn_params, need_attn, strict=True) if need]
        with torch.enable_grad():
            s_leaf = s.detach().requires_grad_(True)
            attention = replay_attention(ctx.modules, s_leaf)
        grad_s, *grad_wanted = torch.autograd.grad(attention, [s_leaf, *wanted], grad_a, allow_unused=True)
        grad_wanted = iter(grad_wanted)
        grad_attn = [next(grad_wanted) if need else None for need in need_attn]

        grad_cs, grad_ws, grad_bs = [None] * m, [None] * m, [None] * m
        pool_grad = grad_s / (grad_v.shape[2] * grad_v.shape[3])
        for i in range(m):
            mask = [need_c[i], need_w[i], need_b[i]]
            if not any(mask):
                continue
            # dL/du_m = a_m ⊙ dV + (dL/ds)/HW (the pooled descriptor's gradient, broadcast), one pass.
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


class LeanTail:
    """CPU training of BatchNorm2d + ReLU paths with attention: one autograd node keeping only the path
    convolutions' outputs (see the module's docstring)."""

    name = "lean"
    reason = (
        "CPU training keeps 2·M feature maps per SK layer in the plain forward (each path's conv and ReLU "
        "outputs): this node keeps M and makes one pass fewer per path in backward"
    )
    gain = "time and activation memory of a training step beside the plain forward: benchmarks/sk_tails.py"

    def supports(self, layer: nn.Module, convs: list[torch.Tensor]) -> str | None:
        c = convs[0]
        if c.device.type != "cpu":
            return "a CPU tail (on an H100 it trained slower than the plain forward)"
        if not torch.is_grad_enabled():
            return "no gradient is recorded"
        if torch.is_autocast_enabled(c.device.type) or c.dtype not in (torch.float32, torch.float64):
            return "fp32 or fp64 without autocast only"
        if torch.compiler.is_compiling():
            return "torch.compile fuses the plain forward itself"
        contract = layer.contract()
        if not contract.attention or contract.hooked:
            return "needs attention without forward hooks (backward runs it again)"
        if contract.path_norm is not NormKind.BATCH or not contract.path_relu:
            return "needs BatchNorm2d in training and ReLU on every path (it recomputes them)"
        if any(path.bn.weight.dtype != c.dtype for path in layer.paths):
            return "the paths' BatchNorm weights in another dtype than their input"
        return None

    def forward(self, layer: nn.Module, convs: list[torch.Tensor]) -> torch.Tensor:
        """V of an SK layer in training (eager autograd), keeping only the path conv outputs for backward."""
        modules = Modules.of(layer)
        weights = [bn.weight for bn in modules.norms]
        biases = [bn.bias for bn in modules.norms]
        return _SKTail.apply(modules, len(convs), *convs, *weights, *biases, *modules.parameters())
