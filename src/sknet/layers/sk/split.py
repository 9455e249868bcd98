"""What the Split hands to a tail: the path convolutions' outputs and, explicitly, the modules that finish
the layer. No tail reads a layer's attributes; a Split changed in one place (e.g. a subclass of
:class:`~sknet.layers.sk.conv.SKConv2d` overriding ``split``/``parts``) reaches every tail, and the fast
tails decline what they were not written for (their ``applies`` checks the modules' exact types).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Parts:
    """The modules an SK tail applies to the Split's outputs c_m (N, C, H', W'):

        u_m = acts[m](norms[m](c_m));  s = Σ_m mean_HW u_m;  a = select(fuse(s)) (N, M, C);  V = Σ_m a_m ⊙ u_m

    `fuse`/`select` None: the plain-sum baseline V = Σ_m u_m (paper Table 7). `training`: the layer's mode.
    `fused`/`lean`: whether the layer lets the fused CUDA tail / the lean CPU tail run (the layer's
    ``fused_tail`` and ``lean_training``; the plain tail always may).
    """

    norms: tuple[nn.Module, ...]
    acts: tuple[nn.Module, ...]
    fuse: nn.Module | None
    select: nn.Module | None
    training: bool
    fused: bool = True
    lean: bool = True

    def modules(self) -> tuple[nn.Module, ...]:
        return (*self.norms, *self.acts, *(m for m in (self.fuse, self.select) if m is not None))

    def params_need_grad(self) -> bool:
        return any(p.requires_grad for m in self.modules() for p in m.parameters())


def finish_paths(parts: Parts, convs: list[torch.Tensor]) -> list[torch.Tensor]:
    """u_m = act_m(norm_m(c_m)) by the modules themselves."""
    return [act(norm(c)) for c, norm, act in zip(convs, parts.norms, parts.acts, strict=True)]


def pooled(us: list[torch.Tensor]) -> torch.Tensor:
    """s = mean_HW(Σ_m u_m) (N, C, 1, 1) as Σ_m mean_HW u_m: U is never materialised."""
    s = us[0].mean((2, 3), keepdim=True)
    for u in us[1:]:
        s = s + u.mean((2, 3), keepdim=True)
    return s
