"""The SK tail on fused Triton kernels (CUDA): everything between the path convolutions c_m and V.

Same equations as the plain tail (:mod:`sknet.layers.sk.plain`); the kernels, and the
algebra that lets backward read each c_m twice, are in :mod:`sknet.kernels.sk_tail_triton`. Training:

    statistics   per-sample moments of c_m (kernel) → BN batch mean and 1/σ; running statistics updated
    s            Σ_m mean_HW ReLU(BN_m(c_m)) (kernel; :class:`_PooledDescriptor`)
    attention    a = select(fuse(s)): the modules themselves, through autograd, so the fuse BN keeps its
                 running statistics and dL/da reaches the attention parameters like any other graph
    V            Σ_m a_m ⊙ ReLU(BN_m(c_m)) (kernel; :class:`_FusedSKTail`)

Backward runs V's node first, and it hands the path convolutions their *whole* gradient, including the
part that flows through s: dL/ds = (∂a/∂s)ᵀ dL/da is N·C-sized and is computed there in closed form
(:func:`descriptor_grad`), so it joins the one elementwise pass that writes dL/dc_m instead of arriving
later as a second full-size gradient to add; s's own node then passes nothing on. (That is why training
needs the library's own Fuse/Select without forward hooks: dL/da must be V's alone.) Higher-order
gradients (``create_graph=True``, eager) are exactly the plain composition's: both nodes replay it.

Everything here is kernels (registered custom operators) and tensor ops with fixed shapes: torch.compile
traces it without graph breaks, and nothing is read back to the host, so CUDA graphs can capture it.
In evaluation the same pool and select kernels run with BN's running statistics (or, after
``fuse_for_inference``, with the bias already in the convolution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sknet.kernels import MAX_SAMPLE_ELEMENTS, kernels_run_on
from sknet.kernels import sk_tail_triton as kernels
from sknet.layers.sk.attention import Fuse, SelectAttention
from sknet.layers.sk.lean import replay_paths
from sknet.layers.sk.split import Parts

NAME = "fused"
SUPPORTED_DTYPES = kernels.MAP_DTYPES


def applies(parts: Parts, convs: list[torch.Tensor]) -> bool:
    """SK attention layers with ≤ 3 paths of conv → BatchNorm2d (or folded) → ReLU, on a device the kernels
    run on (eager or compiled), the layer allowing it (``SKConv2d.fused_tail``). In training the attention
    must be the library's own Fuse/Select (its derivative is stated in closed form in :func:`descriptor_grad`)."""
    c = convs[0]
    if parts.select is None or len(convs) > kernels.MAX_PATHS or c.dtype not in SUPPORTED_DTYPES:
        return False
    if not parts.fused or not kernels_run_on(c) or any(o.dtype != c.dtype or o.shape != c.shape for o in convs):
        return False
    if c[0].numel() >= MAX_SAMPLE_ELEMENTS:  # 32-bit offsets per sample
        return False
    for bn, act in zip(parts.norms, parts.acts, strict=True):
        if type(act) is not nn.ReLU:
            return False
        if type(bn) is nn.Identity:  # folded for inference: no statistics to apply
            if parts.training:
                return False
        elif type(bn) is not nn.BatchNorm2d or not bn.affine or bn.training != parts.training:
            return False  # SyncBatchNorm, frozen BN in a training layer and the like: another tail
        elif not bn.training and not bn.track_running_stats:
            return False
    if parts.training:
        return _closed_form_attention(parts)
    # Evaluation: the forward-only kernels; a gradient through an eval-mode layer takes another tail.
    return not (torch.is_grad_enabled() and (any(o.requires_grad for o in convs) or parts.params_need_grad()))


def _closed_form_attention(parts: Parts) -> bool:
    """Whether :func:`descriptor_grad` states the derivative of sk's attention: the library's Fuse (1×1 conv
    without bias → BatchNorm2d → ReLU) and SelectAttention (1×1 conv without bias → softmax), without
    forward hooks (a hook may replace an output, or put the attention into a loss of its own: either way
    dL/da would not be V's alone; read-only hooks such as sknet.analysis's send training to the plain path
    too, evaluation keeps the kernels)."""
    fuse, select = parts.fuse, parts.select
    if type(fuse) is not Fuse or type(select) is not SelectAttention:
        return False
    if type(fuse.fc) is not nn.Conv2d or type(select.fc) is not nn.Conv2d:
        return False
    for conv in (fuse.fc, select.fc):
        if conv.bias is not None or conv.groups != 1 or conv.kernel_size != (1, 1):
            return False
    if type(fuse.bn) is not nn.BatchNorm2d or not fuse.bn.affine or type(fuse.act) is not nn.ReLU:
        return False
    modules = (fuse, fuse.fc, fuse.bn, fuse.act, select, select.fc)
    if any(m._forward_hooks or m._forward_pre_hooks for m in modules):
        return False
    hooks = torch.nn.modules.module  # hooks registered for every module
    return not (getattr(hooks, "_global_forward_hooks", None) or getattr(hooks, "_global_forward_pre_hooks", None))


def descriptor_grad(s: torch.Tensor, a: torch.Tensor, grad_a: torch.Tensor, fuse_state: tuple, eps: float):
    """dL/ds (N, C) = (∂a/∂s)ᵀ dL/da for a = softmax_M(A·ReLU(BN(W s))), in closed form, in s's dtype.

    s: (N, C); a, grad_a: (N, M, C); fuse_state: (W (d, C, 1, 1), γ, β, A (M·C, d, 1, 1)) and, for a
    fuse BN on running statistics (frozen), (running mean, running var) after them.
    """
    w, gamma, beta, w_select, *running = (t.to(s.dtype) for t in fuse_state)
    w, w_select = w.flatten(1), w_select.flatten(1)
    y = s @ w.T  # (N, d), W s
    mean, var = running if running else (y.mean(0), y.var(0, unbiased=False))
    invstd = torch.rsqrt(var + eps)
    y_hat = (y - mean) * invstd
    # Softmax over M: dL/dlogits = a ⊙ (dL/da − Σ_m a ⊙ dL/da).
    grad_logits = a * (grad_a - (a * grad_a).sum(1, keepdim=True))
    grad_z = grad_logits.flatten(1) @ w_select  # (N, d)
    grad_y_hat = torch.where(gamma * y_hat + beta > 0, grad_z, 0.0) * gamma  # ReLU, then BN's γ
    if running:
        grad_y = grad_y_hat * invstd
    else:  # batch statistics: BN's backward over N
        grad_y = invstd * (grad_y_hat - grad_y_hat.mean(0) - y_hat * (grad_y_hat * y_hat).mean(0))
    return grad_y @ w


def _chan_table(means: torch.Tensor, invstds: torch.Tensor, gammas, betas) -> torch.Tensor:
    """The kernels' per-path, per-channel table (MAX_PATHS, ROWS, C) from (M, C) statistics and the paths'
    γ and β; rows and paths beyond them are zero (backward fills DBETA_MEAN and DGAMMA_MEAN)."""
    m, acc = means.shape[0], means.dtype
    rows = torch.stack([means, invstds.to(acc), torch.stack(gammas).to(acc), torch.stack(betas).to(acc)], dim=1)
    return F.pad(rows, (0, 0, 0, kernels.ROWS - 4, 0, kernels.MAX_PATHS - m))


def _update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var_unbiased: torch.Tensor) -> None:
    """What nn.BatchNorm2d does in training, with tensors only (a None momentum's 1/t stays on the device)."""
    if not bn.track_running_stats:
        return
    bn.num_batches_tracked.add_(1)
    dtype = bn.running_mean.dtype
    factor = bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked.to(dtype)
    bn.running_mean.lerp_(mean.to(dtype), factor)
    bn.running_var.lerp_(var_unbiased.to(dtype), factor)


def _batch_stats(parts: Parts, cs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch mean and 1/σ over (N, H, W), (M, C) each in the accumulation dtype, from per-sample moments;
    updates the paths' running statistics."""
    n, _, h, w = cs[0].shape
    count = n * h * w
    moments = kernels.moments(cs)  # (N, M, 2, C)
    sample_means, sample_m2 = moments[:, :, 0], moments[:, :, 1]
    means = sample_means.mean(0)  # (M, C)
    m2 = sample_m2.sum(0) + (h * w) * (sample_means - means).square().sum(0)  # Chan's combination over N
    eps = {bn.eps for bn in parts.norms}
    if len(eps) == 1:
        invstds = torch.rsqrt(m2 / count + eps.pop())
    else:
        invstds = torch.stack([torch.rsqrt(m2[i] / count + bn.eps) for i, bn in enumerate(parts.norms)])
    var_unbiased = m2 / max(count - 1, 1)
    for i, bn in enumerate(parts.norms):
        _update_running_stats(bn, means[i], var_unbiased[i])
    return means, invstds


class _Handoff:
    """Between V's node and s's node of one layer call, in eager mode: the backward pass (autograd graph
    task) in which V's node, in its first-order form, has already given c_m the gradient through s. s's node
    then passes nothing on; in any other pass (the second pass of a second-order gradient, create_graph=True)
    it gives the plain pooling's gradient itself. Compiled graphs pass None: they have first-order backward
    only (AOTAutograd has no double backward)."""

    __slots__ = ("task",)

    def __init__(self) -> None:
        self.task: int | None = None


class _PooledDescriptor(torch.autograd.Function):
    """(c_m, γ_m, β_m; chan) → s (N, C) = Σ_m mean_HW u_m."""

    @staticmethod
    def forward(ctx, parts: Parts, handoff: _Handoff | None, m: int, chan, *tensors: torch.Tensor):
        ctx.save_for_backward(*tensors)
        ctx.parts, ctx.handoff, ctx.m = parts, handoff, m
        return kernels.pool(list(tensors[:m]), chan)

    @staticmethod
    def backward(ctx, grad_s: torch.Tensor):
        handoff = ctx.handoff
        if handoff is None or handoff.task == torch._C._current_graph_task_id():
            return (None,) * len(ctx.needs_input_grad)
        m, saved, create_graph = ctx.m, ctx.saved_tensors, torch.is_grad_enabled()
        with torch.enable_grad():
            s = sum(u.mean((2, 3)) for u in replay_paths(ctx.parts, saved[:m], saved[m : 2 * m], saved[2 * m :]))
            grads = _grads(s, grad_s, saved, ctx.needs_input_grad[4:], create_graph)
        return (None, None, None, None, *grads)


class _FusedSKTail(torch.autograd.Function):
    """(c_1..c_M, γ_m, β_m, a; chan, s, fuse state) → V = Σ_m a_m ⊙ ReLU(BN_m(c_m)).

    Differentiable inputs: c_m (first order: the whole dL/dc_m, the path through s included), γ_m, β_m and
    a (dL/da, which autograd carries on to the attention parameters). Saves c_m and N·C-sized tensors only.
    """

    @staticmethod
    def forward(ctx, parts: Parts, handoff: _Handoff | None, m: int, fuse_eps: float, *tensors: torch.Tensor):
        cs, chan, attention = tensors[:m], tensors[3 * m], tensors[3 * m + 2]
        ctx.save_for_backward(*tensors)
        ctx.parts, ctx.handoff, ctx.m, ctx.fuse_eps = parts, handoff, m, fuse_eps
        return kernels.select(list(cs), chan, attention)

    @staticmethod
    def backward(ctx, grad_v: torch.Tensor):
        m, saved = ctx.m, ctx.saved_tensors
        cs, gammas, betas = saved[:m], saved[m : 2 * m], saved[2 * m : 3 * m]
        chan, s, attention, fuse_state = saved[3 * m], saved[3 * m + 1], saved[3 * m + 2], saved[3 * m + 3 :]
        needs = ctx.needs_input_grad[4:]  # c_m, γ_m, β_m, chan, s, a, fuse state
        skipped = (None, None, None, None)
        if torch.is_grad_enabled():  # create_graph=True: backward itself must be differentiable
            # The plain composition with a as given: a enters through the seeds dL/du_m = a_m ⊙ dL/dV, so the
            # path through s is not followed here (s's node replays it, as this pass does not hand it over).
            us = replay_paths(ctx.parts, cs, gammas, betas)
            seeds = [grad_v * attention[:, i, :, None, None] for i in range(m)]
            grad_a = torch.stack([(grad_v * u).sum((2, 3)) for u in us], dim=1) if needs[3 * m + 2] else None
            grads = _grads(us, seeds, saved[: 3 * m], needs[: 3 * m], True)
            return (*skipped, *grads, None, None, grad_a, *[None] * len(fuse_state))
        if ctx.handoff is not None:
            ctx.handoff.task = torch._C._current_graph_task_id()
        acc = chan.dtype
        n, _, h, w = cs[0].shape
        a = attention.to(acc)
        p1, p2, p3, p4 = kernels.backward_sums(grad_v, list(cs), chan).unbind(2)  # each (N, M, C)
        gamma, beta = torch.stack(gammas).to(acc), torch.stack(betas).to(acc)  # (M, C)
        grad_a = gamma * p2 + beta * p1  # Σ_HW dV ⊙ u_m
        with torch.autocast(s.device.type, enabled=False):  # backward called inside autocast: stay in acc
            k = descriptor_grad(s, a, grad_a, fuse_state, ctx.fuse_eps) / (h * w)  # (N, C)
        grad_beta = (a * p1 + k[:, None] * p3).sum(0)  # (M, C)
        grad_gamma = (a * p2 + k[:, None] * p4).sum(0)
        chan = chan.clone()  # a second backward through a retained graph starts from the forward table
        chan[:m, kernels.DBETA_MEAN] = grad_beta / (n * h * w)
        chan[:m, kernels.DGAMMA_MEAN] = grad_gamma / (n * h * w)
        grad_cs = kernels.backward_apply(grad_v, list(cs), chan, a, k)
        values = [*grad_cs, *grad_gamma.unbind(0), *grad_beta.unbind(0)]
        grads = [v.to(t.dtype) if need else None for v, need, t in zip(values, needs, saved, strict=False)]
        grad_a = grad_a.to(attention.dtype) if needs[3 * m + 2] else None
        return (*skipped, *grads, None, None, grad_a, *[None] * len(fuse_state))


def _grads(outputs, seeds, inputs, needs, create_graph: bool) -> list[torch.Tensor | None]:
    """Gradients of `outputs` (seeded) for the `inputs` that need one."""
    wanted = [t for t, need in zip(inputs, needs, strict=True) if need]
    grads = iter(torch.autograd.grad(outputs, wanted, seeds, create_graph=create_graph, allow_unused=True))
    return [next(grads) if need else None for need in needs]


def forward(parts: Parts, cs: list[torch.Tensor]) -> torch.Tensor:
    """V of an SK layer through the fused kernels; check :func:`applies` first."""
    if not parts.training:
        return _eval_forward(parts, cs)
    gammas = [bn.weight for bn in parts.norms]
    betas = [bn.bias for bn in parts.norms]
    with torch.no_grad():
        plain = [c.detach() for c in cs]
        means, invstds = _batch_stats(parts, plain)
        chan = _chan_table(means, invstds, gammas, betas)
    handoff = None if torch.compiler.is_compiling() else _Handoff()
    s = _PooledDescriptor.apply(parts, handoff, len(cs), chan, *cs, *gammas, *betas)  # (N, C), acc. dtype
    attention = _attention(parts, s)
    bn = parts.fuse.bn
    fuse_state = [parts.fuse.fc.weight, bn.weight, bn.bias, parts.select.fc.weight]
    if not bn.training and bn.track_running_stats:
        fuse_state += [bn.running_mean, bn.running_var]
    fuse_state = [t.detach() for t in fuse_state]
    tensors = (*cs, *gammas, *betas, chan, s.detach(), attention, *fuse_state)
    return _FusedSKTail.apply(parts, handoff, len(cs), bn.eps, *tensors)


@torch.no_grad()
def _eval_forward(parts: Parts, cs: list[torch.Tensor]) -> torch.Tensor:
    acc = kernels.acc_dtype(cs[0].dtype)
    means, invstds, gammas, betas = [], [], [], []
    for bn in parts.norms:
        if type(bn) is nn.Identity:  # BN folded into the conv (bias included in c)
            zero = torch.zeros(cs[0].shape[1], device=cs[0].device, dtype=acc)
            means.append(zero), invstds.append(zero + 1), gammas.append(zero + 1), betas.append(zero)
            continue
        means.append(bn.running_mean.to(acc))
        invstds.append(torch.rsqrt(bn.running_var.to(acc) + bn.eps))
        gammas.append(bn.weight)
        betas.append(bn.bias)
    chan = _chan_table(torch.stack(means), torch.stack(invstds), gammas, betas)
    return kernels.select(cs, chan, _attention(parts, kernels.pool(cs, chan)))


def _attention(parts: Parts, s: torch.Tensor) -> torch.Tensor:
    """a = select(fuse(s)) by the modules themselves, s (N, C) given in the dtype of their parameters
    (autocast lowers the convolutions as usual)."""
    dtype = next(parts.fuse.parameters(), s).dtype
    return parts.select(parts.fuse(s.to(dtype)[:, :, None, None]))
