"""The fused tail (CUDA): everything between the path convolutions c_m and V on Triton kernels.

Same equations as :meth:`SKConv2d.forward <sknet.layers.selective_kernel.SKConv2d.forward>`; the kernels, and
the algebra that lets backward read each c_m twice, are in :mod:`sknet.kernels.sk_tail_triton`:

    statistics   the paths' norms: batch statistics from per-sample moments of c_m (kernel; running statistics
                 updated), or a fixed affine map (frozen BN, BN in eval mode, BN folded)
    s            Σ_m mean_HW ReLU(norm_m(c_m)) (kernel)
    attention    a = select(fuse(s)) by the modules themselves (the fuse norm keeps its running statistics)
    V            Σ_m a_m ⊙ ReLU(norm_m(c_m)) (kernel)

Where a gradient is wanted, V is one autograd node whose inputs are c_m, the paths' γ and β and the attention's
parameters. Its backward hands c_m their *whole* gradient in one elementwise pass, the part that flows through
s included: dL/ds is N·C-sized and comes from the attention's derivative in closed form
(:func:`~sknet.layers.sk_tails.attention.attention_grads`, which also gives the attention parameters'), so it
joins the pass that writes dL/dc_m instead of arriving later as a second full-size gradient to add. Higher-order
gradients (``create_graph=True``, eager) are the plain forward's: the node replays it.

Everything here is kernels (registered custom operators) and tensor ops with fixed shapes: torch.compile
traces it without graph breaks, and nothing is read back to the host, so CUDA graphs can capture it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sknet.kernels import MAX_SAMPLE_ELEMENTS, kernels_run_on
from sknet.kernels import sk_tail_triton as kernels
from sknet.layers.norm import NormKind, affine_terms, norm_kind
from sknet.layers.sk_tails.attention import Modules, attention_grads, replay_tail_backward

SUPPORTED_DTYPES = kernels.MAP_DTYPES


def _chan_table(means: torch.Tensor, invstds: torch.Tensor, gammas, betas) -> torch.Tensor:
    """The kernels' per-path, per-channel table (MAX_PATHS, ROWS, C) from (M, C) statistics and the paths'
    γ and β; rows and paths beyond them are zero (backward fills DBETA_MEAN and DGAMMA_MEAN for batch
    statistics; for a fixed map they stay zero, which is its gradient)."""
    m, acc = means.shape[0], means.dtype
    rows = torch.stack([means, invstds.to(acc), torch.stack(gammas).to(acc), torch.stack(betas).to(acc)], dim=1)
    return F.pad(rows, (0, 0, 0, kernels.ROWS - 4, 0, kernels.MAX_PATHS - m))


def _update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var_unbiased: torch.Tensor) -> None:
    """What nn.BatchNorm2d does in training, with tensors only (a None momentum's 1/t stays on the device)."""
    bn.num_batches_tracked.add_(1)
    dtype = bn.running_mean.dtype
    factor = bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked.to(dtype)
    bn.running_mean.lerp_(mean.to(dtype), factor)
    bn.running_var.lerp_(var_unbiased.to(dtype), factor)


def _batch_stats(norms: tuple[nn.Module, ...], cs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch mean and 1/σ over (N, H, W), (M, C) each in the accumulation dtype, from per-sample moments;
    updates the norms' running statistics."""
    n, _, h, w = cs[0].shape
    count = n * h * w
    moments = kernels.moments(cs)  # (N, M, 2, C)
    sample_means, sample_m2 = moments[:, :, 0], moments[:, :, 1]
    means = sample_means.mean(0)  # (M, C)
    m2 = sample_m2.sum(0) + (h * w) * (sample_means - means).square().sum(0)  # Chan's combination over N
    eps = {bn.eps for bn in norms}
    if len(eps) == 1:
        invstds = torch.rsqrt(m2 / count + eps.pop())
    else:
        invstds = torch.stack([torch.rsqrt(m2[i] / count + bn.eps) for i, bn in enumerate(norms)])
    var_unbiased = m2 / max(count - 1, 1)
    for i, bn in enumerate(norms):
        _update_running_stats(bn, means[i], var_unbiased[i])
    return means, invstds


def _attention(modules: Modules, s: torch.Tensor) -> torch.Tensor:
    """a = select(fuse(s)) by the modules themselves, s (N, C) given in the dtype of their parameters
    (autocast lowers the convolutions as usual)."""
    dtype = next(modules.fuse.parameters(), s).dtype
    return modules.select(modules.fuse(s.to(dtype)[:, :, None, None]))


class _FusedSKTail(torch.autograd.Function):
    """(c_1..c_M, γ_m, β_m, W, γ_f, β_f, A; chan, s, a, fuse statistics) → V = Σ_m a_m ⊙ ReLU(norm_m(c_m)).

    Differentiable: c_m (the whole dL/dc_m, the path through s included), the paths' γ_m and β_m, and the
    attention's W, γ_f, β_f and A. Saves c_m and N·C-sized tensors only.
    """

    @staticmethod
    def forward(ctx, modules: Modules, m: int, batch: bool, *tensors: torch.Tensor) -> torch.Tensor:
        cs, chan, attention = tensors[:m], tensors[3 * m + 4], tensors[3 * m + 6]
        ctx.save_for_backward(*tensors)
        ctx.modules, ctx.m, ctx.batch = modules, m, batch
        return kernels.select(list(cs), chan, attention)

    @staticmethod
    def backward(ctx, grad_v: torch.Tensor):
        m, saved = ctx.m, ctx.saved_tensors
        cs, gammas, betas = saved[:m], saved[m : 2 * m], saved[2 * m : 3 * m]
        attn_params = saved[3 * m : 3 * m + 4]  # W, γ_f, β_f, A
        chan, s, attention, running = saved[3 * m + 4], saved[3 * m + 5], saved[3 * m + 6], saved[3 * m + 7 :]
        needs = ctx.needs_input_grad[3 : 3 * m + 7]
        tail = (None,) * (3 + len(running))  # chan, s, a, the fuse statistics
        if torch.is_grad_enabled():  # create_graph=True: backward itself must be differentiable
            grads = replay_tail_backward(ctx.modules, cs, gammas, betas, attn_params, grad_v, needs)
            return (None, None, None, *grads, *tail)
        acc = chan.dtype
        n, _, h, w = cs[0].shape
        a = attention.to(acc)
        p1, p2, p3, p4 = kernels.backward_sums(grad_v, list(cs), chan).unbind(2)  # each (N, M, C)
        gamma, beta = torch.stack(gammas).to(acc), torch.stack(betas).to(acc)  # (M, C)
        grad_a = gamma * p2 + beta * p1  # Σ_HW dV ⊙ u_m
        with torch.autocast(s.device.type, enabled=False):  # backward called inside autocast: stay in acc
            grad_s, *grad_attn = attention_grads(s, a, grad_a, (*attn_params, *running), ctx.modules.fuse.bn.eps)
        k = grad_s / (h * w)  # (N, C)
        grad_beta = (a * p1 + k[:, None] * p3).sum(0)  # (M, C)
        grad_gamma = (a * p2 + k[:, None] * p4).sum(0)
        if ctx.batch:  # batch statistics: their own gradient through the mean and variance
            chan = chan.clone()  # a second backward through a retained graph starts from the forward table
            chan[:m, kernels.DBETA_MEAN] = grad_beta / (n * h * w)
            chan[:m, kernels.DGAMMA_MEAN] = grad_gamma / (n * h * w)
        grad_cs = kernels.backward_apply(grad_v, list(cs), chan, a, k)
        values = [*grad_cs, *grad_gamma.unbind(0), *grad_beta.unbind(0), *grad_attn]
        grads = [v.to(t.dtype) if need else None for v, need, t in zip(values, needs, saved[: 3 * m + 4], strict=True)]
        return (None, None, None, *grads, *tail)


class FusedTail:
    """The SK tail on Triton kernels: CUDA (or Triton's interpreter on the CPU, for the tests)."""

    name = "fused"
    reason = (
        "on a GPU the plain forward's elementwise passes (norms, ReLUs, pooling, weighted sum and their "
        "backward) cost as much as the convolutions: SKNet-50 trained well below what its two paths alone "
        "allow (benchmarks/RESULTS.md, 2026-11-23, an H100)"
    )
    gain = "not yet measured on a GPU: benchmarks/gpu.py times it beside the plain forward"

    def supports(self, layer: nn.Module, convs: list[torch.Tensor]) -> str | None:
        c = convs[0]
        if not kernels_run_on(c):
            return "the Triton kernels run on CUDA"
        if len(convs) > kernels.MAX_PATHS:
            return f"at most {kernels.MAX_PATHS} paths"
        if c.dtype not in SUPPORTED_DTYPES or any(o.dtype != c.dtype or o.shape != c.shape for o in convs):
            return "paths of one shape, in fp64, fp32, bf16 or fp16"
        if c[0].numel() >= MAX_SAMPLE_ELEMENTS:  # 32-bit offsets inside a sample
            return f"a sample's map must have fewer than {MAX_SAMPLE_ELEMENTS} elements"
        contract = layer.contract()
        if not contract.attention:
            return "a plain sum of the paths"
        if contract.path_norm not in (NormKind.BATCH, NormKind.AFFINE) or not contract.path_relu:
            return "needs norms of the batch's statistics or fixed affine maps, and ReLU, on every path"
        if _needs_grad(layer, convs) and not contract.closed_form:
            return "a gradient needs the attention's closed-form derivative (sknet's Fuse and Select, no hooks)"
        return None

    def forward(self, layer: nn.Module, cs: list[torch.Tensor]) -> torch.Tensor:
        """V of an SK layer through the fused kernels; check :meth:`supports` first."""
        modules = Modules.of(layer)
        acc, channels = kernels.acc_dtype(cs[0].dtype), cs[0].shape[1]
        batch = norm_kind(modules.norms[0]) is NormKind.BATCH
        with torch.no_grad():
            if batch:
                means, invstds = _batch_stats(modules.norms, [c.detach() for c in cs])
                gammas, betas = [bn.weight for bn in modules.norms], [bn.bias for bn in modules.norms]
            else:
                terms = [affine_terms(norm, channels, acc, cs[0].device) for norm in modules.norms]
                means, invstds = torch.stack([t[0] for t in terms]), torch.stack([t[1] for t in terms])
                gammas, betas = [t[2] for t in terms], [t[3] for t in terms]
            chan = _chan_table(means, invstds, gammas, betas)
            s = kernels.pool(cs, chan)  # (N, C), accumulation dtype
            attention = _attention(modules, s)
        if not _needs_grad(layer, cs):
            return kernels.select(cs, chan, attention)
        fuse = modules.fuse
        params = (fuse.fc.weight, fuse.bn.weight, fuse.bn.bias, modules.select.fc.weight)
        fixed = norm_kind(fuse.bn) is NormKind.AFFINE  # a frozen or eval-mode fuse norm: its statistics too
        running = (fuse.bn.running_mean, fuse.bn.running_var) if fixed else ()
        return _FusedSKTail.apply(modules, len(cs), batch, *cs, *gammas, *betas, *params, chan, s, attention, *running)


def _needs_grad(layer: nn.Module, convs: list[torch.Tensor]) -> bool:
    if not torch.is_grad_enabled():
        return False
    return any(c.requires_grad for c in convs) or any(
        p.requires_grad for module in (*(path.bn for path in layer.paths), layer.fuse, layer.select)
        for p in module.parameters()
    )  # fmt: skip
