"""Fused Triton kernels for the SK select step, V = Σ_m a_m ⊙ U_m (M ≤ 3).

forward:  one pass over the M path maps, writing V.
backward: one pass per (sample, block of channels) over H×W that reads dV and every U_m once, writes
          dU_m = a_m ⊙ dV and accumulates dA[n, m, c] = Σ_HW dV ⊙ U_m (in fp32).
Both work on NCHW or channels_last tensors. They are used on CUDA only (see `use_triton`); on CPUs
they run in Triton's interpreter (TRITON_INTERPRET=1), which is how CI checks them.
"""

from __future__ import annotations

import torch

from sknet.kernels import MAX_SAMPLE_ELEMENTS, kernels_run_on
from sknet.kernels.launch import launch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None

MAX_PATHS = 3
MAP_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # accumulated in fp32
# An explicit register cap and 8 warps, as for the fused tail's kernels (sk_tail_triton: ptxas's own choice
# spilled at 48 registers; capped with 4 warps, M = 3 spilled on maps whose sizes are not multiples of 16).
LAUNCH_OPTIONS = {"num_warps": 8, "maxnreg": 128}


def _layout(t: torch.Tensor) -> bool | None:
    """True for channels_last, False for NCHW-contiguous, None for anything else."""
    if t.is_contiguous():
        return False
    if t.is_contiguous(memory_format=torch.channels_last):
        return True
    return None


def use_triton(paths: tuple[torch.Tensor, ...]) -> bool:
    """Whether the fused kernels apply: CUDA tensors in fp32, fp16 or bf16 (they accumulate in fp32), M ≤ 3,
    one dense layout, triton importable, and not turned off (SKNET_FUSED=0, as for the fused SK tail)."""
    if len(paths) > MAX_PATHS or torch.compiler.is_compiling():
        return False  # compiled graphs: inductor generates the fused elementwise code itself
    if paths[0].dtype not in MAP_DTYPES or not kernels_run_on(paths[0]):
        return False
    _, c, h, w = paths[0].shape
    if c * h * w >= MAX_SAMPLE_ELEMENTS:  # offsets inside a sample are 32-bit
        return False
    layout = _layout(paths[0])
    return layout is not None and all(_layout(p) == layout and p.dtype == paths[0].dtype for p in paths)


if triton is not None:

    @triton.jit
    def _select_fwd_kernel(
        u0, u1, u2, a, v, total, C, HW, M: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr
    ):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # N·C·H·W may pass 2³¹
        mask = offs < total
        if CHANNELS_LAST:  # noqa: SIM108  (a compile-time branch in Triton's JIT)
            c = offs % C
        else:
            c = (offs // HW) % C
        n = offs // (HW * C)
        a_off = n * (M * C) + c
        acc = tl.load(u0 + offs, mask=mask, other=0.0).to(tl.float32) * tl.load(a + a_off, mask=mask, other=0.0)
        if M > 1:
            acc += tl.load(u1 + offs, mask=mask, other=0.0).to(tl.float32) * tl.load(
                a + a_off + C, mask=mask, other=0.0
            )
        if M > 2:
            acc += tl.load(u2 + offs, mask=mask, other=0.0).to(tl.float32) * tl.load(
                a + a_off + 2 * C, mask=mask, other=0.0
            )
        tl.store(v + offs, acc.to(v.dtype.element_ty), mask=mask)

    @triton.jit
    def _select_bwd_kernel(
        dv,
        u0,
        u1,
        u2,
        a,
        du0,
        du1,
        du2,
        da,
        C,
        HW,
        M: tl.constexpr,
        CHANNELS_LAST: tl.constexpr,
        BLOCK_C: tl.constexpr,
        BLOCK_HW: tl.constexpr,
    ):
        n = tl.program_id(0)
        cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_mask = cs < C
        a_base = n * (M * C) + cs
        sample = n.to(tl.int64) * HW * C  # N·C·H·W may pass 2³¹
        a0 = tl.load(a + a_base, mask=c_mask, other=0.0)
        a1 = tl.load(a + a_base + C, mask=c_mask & (M > 1), other=0.0)
        a2 = tl.load(a + a_base + 2 * C, mask=c_mask & (M > 2), other=0.0)
        s0 = tl.zeros((BLOCK_C,), dtype=tl.float32)
        s1 = tl.zeros((BLOCK_C,), dtype=tl.float32)
        s2 = tl.zeros((BLOCK_C,), dtype=tl.float32)
        for start in range(0, HW, BLOCK_HW):
            hw = start + tl.arange(0, BLOCK_HW)
            if CHANNELS_LAST:  # noqa: SIM108  (a compile-time branch in Triton's JIT)
                offs = sample + hw[:, None] * C + cs[None, :]
            else:
                offs = sample + cs[None, :] * HW + hw[:, None]
            mask = (hw[:, None] < HW) & c_mask[None, :]
            g = tl.load(dv + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(du0 + offs, (g * a0[None, :]).to(du0.dtype.element_ty), mask=mask)
            s0 += tl.sum(g * tl.load(u0 + offs, mask=mask, other=0.0).to(tl.float32), axis=0)
            if M > 1:
                tl.store(du1 + offs, (g * a1[None, :]).to(du1.dtype.element_ty), mask=mask)
                s1 += tl.sum(g * tl.load(u1 + offs, mask=mask, other=0.0).to(tl.float32), axis=0)
            if M > 2:
                tl.store(du2 + offs, (g * a2[None, :]).to(du2.dtype.element_ty), mask=mask)
                s2 += tl.sum(g * tl.load(u2 + offs, mask=mask, other=0.0).to(tl.float32), axis=0)
        tl.store(da + a_base, s0, mask=c_mask)
        if M > 1:
            tl.store(da + a_base + C, s1, mask=c_mask)
        if M > 2:
            tl.store(da + a_base + 2 * C, s2, mask=c_mask)


def _padded(paths: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(paths) + (paths[0],) * (MAX_PATHS - len(paths))  # unused slots are never read


def select_forward(paths: tuple[torch.Tensor, ...], attention: torch.Tensor) -> torch.Tensor:
    """V (layout of paths[0]) from M ≤ 3 maps (N, C, H, W) and attention (N, M, C)."""
    u = paths[0]
    _, c, h, w = u.shape
    channels_last = bool(_layout(u))
    v = torch.empty_like(u)
    a = attention.float().contiguous()
    total = u.numel()
    block = 1024
    launch(
        _select_fwd_kernel,
        (triton.cdiv(total, block),),
        *_padded(paths),
        a,
        v,
        total,
        c,
        h * w,
        M=len(paths),
        CHANNELS_LAST=channels_last,
        BLOCK=block,
        **LAUNCH_OPTIONS,
    )
    return v


def select_backward(grad_v: torch.Tensor, paths: tuple[torch.Tensor, ...], attention: torch.Tensor):
    """(dA (N, M, C) in attention's dtype, [dU_m]) for V = Σ a_m ⊙ U_m."""
    u = paths[0]
    n, c, h, w = u.shape
    channels_last = bool(_layout(u))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    grad_v = grad_v.contiguous(memory_format=memory_format)
    a = attention.float().contiguous()
    grads = [torch.empty_like(u) for _ in paths]
    grad_a = torch.empty(n, len(paths), c, device=u.device, dtype=torch.float32)
    block_c = 32
    grid = (n, triton.cdiv(c, block_c))
    launch(
        _select_bwd_kernel,
        grid,
        grad_v,
        *_padded(paths),
        a,
        *_padded(tuple(grads)),
        grad_a,
        c,
        h * w,
        M=len(paths),
        CHANNELS_LAST=channels_last,
        BLOCK_C=block_c,
        BLOCK_HW=32,
        **LAUNCH_OPTIONS,
    )
    return grad_a.to(attention.dtype), grads
