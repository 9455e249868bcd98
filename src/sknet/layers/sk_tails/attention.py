"""What the fast tails share: the attention's derivative in closed form, and the SK equations replayed through
autograd from a node's saved inputs (for ``create_graph=True`` backward passes, which must be differentiable).

The closed form holds for the modules whose ``closed_form`` is True (``Fuse``: a bias-free 1×1 conv W, a norm
of the batch's statistics or a fixed affine map, ReLU; ``SelectAttention``: a bias-free 1×1 conv A, softmax
over the M paths): with y = W s, ŷ its normalisation, z = ReLU(γ ŷ + β), a = softmax_M(A z),

    dL/dl   = a ⊙ (dL/da − Σ_m a_m ⊙ dL/da_m)                    (softmax, per channel)
    dL/dA   = (dL/dl)ᵀ z,   dL/dz = (dL/dl) A
    dL/dz'  = [γ ŷ + β > 0] ⊙ dL/dz;   dL/dγ = Σ_N dL/dz' ⊙ ŷ,   dL/dβ = Σ_N dL/dz'
    dL/dy   = σ⁻¹·(g − mean_N g − ŷ·mean_N(g ⊙ ŷ)), g = γ ⊙ dL/dz'   (batch statistics; σ⁻¹·g for fixed ones)
    dL/dW   = (dL/dy)ᵀ s,   dL/ds = (dL/dy) W
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sknet.layers.norm import NormKind, norm_kind


@dataclass(frozen=True)
class Modules:
    """The modules after an SK layer's Split, handed to a tail's autograd node (which replays them for
    create_graph=True backward passes): the paths' norms, the fuse step and the select step."""

    norms: tuple[nn.Module, ...]
    fuse: nn.Module
    select: nn.Module

    @classmethod
    def of(cls, layer: nn.Module) -> Modules:
        return cls(tuple(path.bn for path in layer.paths), layer.fuse, layer.select)

    def parameters(self) -> list[torch.Tensor]:
        return [*self.fuse.parameters(), *self.select.parameters()]


def attention_grads(
    s: torch.Tensor,
    a: torch.Tensor,
    grad_a: torch.Tensor,
    fuse_state: tuple[torch.Tensor, ...],
    eps: float,
) -> tuple[torch.Tensor, ...]:
    """(dL/ds, dL/dW, dL/dγ, dL/dβ, dL/dA) for a = softmax_M(A·ReLU(norm(W s))), in s's dtype.

    s: (N, C); a, grad_a: (N, M, C); fuse_state: (W (d, C, 1, 1), γ, β, A (M·C, d, 1, 1)) and, for a fuse
    norm that is a fixed map (frozen, or a BatchNorm in eval mode), its (running mean, running var) after them.
    The weight gradients come shaped as the weights.
    """
    w4, gamma, beta, a4, *running = (t.to(s.dtype) for t in fuse_state)
    w, w_select = w4.flatten(1), a4.flatten(1)
    y = s @ w.T  # (N, d), W s
    mean, var = running if running else (y.mean(0), y.var(0, unbiased=False))
    invstd = torch.rsqrt(var + eps)
    y_hat = (y - mean) * invstd
    pre = gamma * y_hat + beta
    grad_logits = (a * (grad_a - (a * grad_a).sum(1, keepdim=True))).flatten(1)  # (N, M·C)
    grad_select = grad_logits.T @ pre.clamp_min(0)  # dL/dA = (dL/dl)ᵀ z
    grad_pre = torch.where(pre > 0, grad_logits @ w_select, 0.0)  # through the ReLU
    grad_gamma, grad_beta = (grad_pre * y_hat).sum(0), grad_pre.sum(0)
    grad_y_hat = grad_pre * gamma
    if running:
        grad_y = grad_y_hat * invstd
    else:  # batch statistics: the norm's backward over N
        grad_y = invstd * (grad_y_hat - grad_y_hat.mean(0) - y_hat * (grad_y_hat * y_hat).mean(0))
    return grad_y @ w, (grad_y.T @ s).view_as(w4), grad_gamma, grad_beta, grad_select.view_as(a4)


def replay_norm(norm: nn.Module, c: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None):
    """norm(c) through autograd with `weight` and `bias` as its γ and β, running statistics untouched: a BatchNorm
    in training with the batch's statistics, a fixed map (frozen or eval-mode BatchNorm, nn.Identity) as such."""
    if type(norm) is nn.Identity:
        return c
    if norm_kind(norm) is NormKind.BATCH:
        return F.batch_norm(c, None, None, weight, bias, training=True, eps=norm.eps)
    return F.batch_norm(c, norm.running_mean, norm.running_var, weight, bias, training=False, eps=norm.eps)


def replay_tail_backward(
    modules: Modules,
    cs: tuple[torch.Tensor, ...],
    weights: tuple[torch.Tensor | None, ...],
    biases: tuple[torch.Tensor | None, ...],
    attn_params: tuple[torch.Tensor, ...],
    grad_v: torch.Tensor,
    needs: tuple[bool, ...],
) -> list[torch.Tensor | None]:
    """Gradients of V (inputs c_m, γ_m, β_m, attention parameters, in the order of `needs`) through the SK
    equations run by autograd, with create_graph=True: what a node's backward gives when it must itself be
    differentiable. The fuse step's norm updates copies of its running statistics, and forward hooks on
    `select` do not see the batch a second time (its ``forward`` is called, not the module).
    """
    us = [replay_norm(norm, c, w, b).relu() for c, w, b, norm in zip(cs, weights, biases, modules.norms, strict=True)]
    attention = replay_attention(modules, sum(u.mean((2, 3), keepdim=True) for u in us))
    v = sum(u * attention[:, i, :, None, None] for i, u in enumerate(us))
    inputs = [*cs, *weights, *biases, *attn_params]
    wanted = [t for t, need in zip(inputs, needs, strict=True) if need]
    grads = iter(torch.autograd.grad(v, wanted, grad_v, create_graph=True, allow_unused=True))
    return [next(grads) if need else None for need in needs]


def replay_attention(modules: Modules, s: torch.Tensor) -> torch.Tensor:
    """a = select(fuse(s)) through autograd, the fuse norm's running statistics updated on copies (a second
    run of the step's attention, e.g. in backward, leaves the module as one run did)."""
    buffers = {name: b.clone() for name, b in modules.fuse.named_buffers()}
    return modules.select.forward(torch.func.functional_call(modules.fuse, buffers, (s,), strict=False))
