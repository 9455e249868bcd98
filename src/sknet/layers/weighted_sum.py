"""The Select step's weighted sum V = Σ_m a_m ⊙ U_m, without stacking the paths.

A stacked (N, M, C, H, W) tensor (the usual implementation) costs a full copy of every path in forward
and keeps it alive for backward. Here the sum is accumulated into one output, and backward keeps only what
it needs: the path outputs (already kept by their ReLUs) and the small attention tensor.
"""

from __future__ import annotations

import torch


def _accumulate(paths: tuple[torch.Tensor, ...], attention: torch.Tensor, sums_to_one: bool) -> torch.Tensor:
    """Σ_m attention[:, m] ⊙ paths[m] into one output (no stacking, no autograd)."""
    weights = attention[..., None, None]  # (N, M, C, 1, 1); in the paths' dtype (weighted_sum casts it)
    if torch.onnx.is_in_onnx_export():
        # ONNX has no lerp: its exporter writes one as both of lerp's branches and a Where, six passes over
        # the feature map; Σ_m a_m·u_m is M products and M − 1 sums, which ONNX Runtime also quantizes.
        out = paths[0] * weights[:, 0]
        for m in range(1, len(paths)):
            out = out + paths[m] * weights[:, m]
        return out
    if sums_to_one and len(paths) == 2:
        # a0 + a1 = 1: a0·u0 + a1·u1 = u1 + a0·(u0 − u1), one fused pass.
        return torch.lerp(paths[1], paths[0], weights[:, 0])
    out = paths[0] * weights[:, 0]
    for m in range(1, len(paths)):
        out.addcmul_(paths[m], weights[:, m])
    return out


class _WeightedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attention: torch.Tensor, sums_to_one: bool, *paths: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(attention, *paths)
        return _accumulate(paths, attention, sums_to_one)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        attention, *paths = ctx.saved_tensors
        # With create_graph=True grad mode is on here and the ops below are recorded: higher-order gradients.
        weights = attention[..., None, None]
        grad_paths = [grad_out * weights[:, m] if ctx.needs_input_grad[m + 2] else None for m in range(len(paths))]
        grad_attention = None
        if ctx.needs_input_grad[0]:
            grad_attention = torch.stack([(grad_out * u).sum((2, 3)) for u in paths], dim=1)
        return (grad_attention, None, *grad_paths)


def weighted_sum(
    paths: list[torch.Tensor] | tuple[torch.Tensor, ...], attention: torch.Tensor, sums_to_one: bool = False
) -> torch.Tensor:
    """V = Σ_m attention[:, m, :] ⊙ paths[m].

    Args:
        paths: M tensors (N, C, H, W), any memory format (channels_last is preserved).
        attention: (N, M, C); cast to the paths' dtype (CUDA autocast runs softmax in fp32).
        sums_to_one: the attention sums to 1 over M, as a softmax gate's does (allows a one-pass form for
            M = 2); the gate states it (``SelectAttention.sums_to_one``).
    Returns:
        (N, C, H, W) in the memory format of ``paths[0]``.
    """
    paths = tuple(paths)
    if not isinstance(attention, torch.fx.Proxy) and attention.dtype != paths[0].dtype:
        # CUDA autocast runs softmax in fp32 while the paths are bf16/fp16: V takes the paths' dtype (as the
        # fused tail's does); autograd casts dL/da back to fp32.
        attention = attention.to(paths[0].dtype)
    if len(paths) == 1:
        return paths[0] * attention[:, 0, :, None, None]
    if isinstance(attention, torch.fx.Proxy):  # FX symbolic tracing: _accumulate's ops, none in place
        weights = attention[..., None, None]
        if sums_to_one and len(paths) == 2:
            return torch.lerp(paths[1], paths[0], weights[:, 0])
        out = paths[0] * weights[:, 0]
        for m in range(1, len(paths)):
            out = torch.addcmul(out, paths[m], weights[:, m])
        return out
    if torch.is_grad_enabled() and (attention.requires_grad or any(p.requires_grad for p in paths)):
        return _WeightedSum.apply(attention, sums_to_one, *paths)
    return _accumulate(paths, attention, sums_to_one)
