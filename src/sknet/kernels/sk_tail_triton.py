"""Fused Triton kernels for the SK tail: everything between the path convolutions c_m and V.

    u_m = ReLU(BN_m(c_m)),  s = mean_HW(Σ_m u_m),  a = select(fuse(s)),  V = Σ_m a_m ⊙ u_m

u_m is never written to memory: every kernel recomputes it from c_m and the per-channel BN
statistics. Per SK layer and training step, each c_m is read

    forward:  stats (batch mean and variance) → pool (s) → select (V)        3 reads, V written
    backward: reduce (per-(n, c) sums) → apply (dL/dc_m)                     2 reads, dL/dc_m written

and the attention subgraph in between (Fuse: W, BN, ReLU; Select: A, softmax) is N·C-sized and runs in
PyTorch. Backward needs only four sums per (n, c, m) over H×W, because with x̂ = (c − μ)·σ⁻¹,
mask = [γx̂ + β > 0] and g = dL/dV:

    dL/da_m        = Σ g·u_m = γ·P2 + β·P1            P1 = Σ mask·g,  P2 = Σ mask·g·x̂
    dL/dβ_m        = Σ_n (a_m·P1 + k·P3)               P3 = Σ mask,    P4 = Σ mask·x̂
    dL/dγ_m        = Σ_n (a_m·P2 + k·P4)               k  = (dL/ds) / HW
    dL/dc_m        = γσ⁻¹·(mask·(a_m·g + k) − dβ/(N·HW) − x̂·dγ/(N·HW))

Accumulation is in fp32 (fp64 for fp64 inputs); inputs and outputs in fp32, bf16 or fp16; NCHW or
channels_last (one set of strides, H×W walked as one axis, which both layouts allow); M = 1..3.
Each launch is a PyTorch custom operator (``torch.ops.sknet.sk_tail_*``), so torch.compile traces them.
On CPUs the kernels run in Triton's interpreter (TRITON_INTERPRET=1), which is how CI checks them.
"""

import torch

from sknet.kernels import MAX_SAMPLE_ELEMENTS
from sknet.kernels.launch import launch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None

MAX_PATHS = 3
# The dtypes of c_m the kernels take (they accumulate in fp32, fp64 for fp64 maps).
MAP_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# Rows of the per-path, per-channel table `chan` (MAX_PATHS, ROWS, C) the kernels read (unused paths: 0).
MEAN, INVSTD, GAMMA, BETA, DBETA_MEAN, DGAMMA_MEAN = range(6)
ROWS = 6


def _blocks(channels_last: bool) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_HW): the contiguous axis gets the long side of the tile."""
    return (64, 32) if channels_last else (16, 128)


# The reductions over H×W (statistics, pooling, backward sums) give each program one chunk of H×W when
# N·C alone would leave the GPU short of programs (early stages: 56×56 maps with few channel blocks); the
# chunks' partial results are combined in the operator. Deterministic: no atomics.
TARGET_PROGRAMS = 1024
MIN_CHUNK_BLOCKS = 4  # a chunk spans at least this many tiles of BLOCK_HW positions


def _chunking(n: int, c: int, hw: int, block_c: int, block_hw: int) -> tuple[int, int]:
    """(chunk, split): H×W in `split` chunks of `chunk` positions (a multiple of block_hw; the last may be
    shorter)."""
    programs = n * triton.cdiv(c, block_c)
    split = max(1, min(triton.cdiv(TARGET_PROGRAMS, programs), hw // (MIN_CHUNK_BLOCKS * block_hw)))
    chunk = triton.cdiv(triton.cdiv(hw, split), block_hw) * block_hw
    return chunk, triton.cdiv(hw, chunk)


# Launch options: warps per program (Triton) and registers per thread (ptxas). Every kernel gets an
# explicit register cap (left to its own heuristics ptxas spilled some specializations at 48–80 registers)
# of 128, which keeps ≥ 25% theoretical occupancy on sm_90 (16 of 64 warps per SM). Within it, 4 warps
# hold a tile when the map's contiguous axis is a multiple of 16 (vector accesses); 8 warps when it is
# not (scalar elements and addresses: 16 a thread spilled), 16 for M = 3 (spilled at 8). ptxas uses what
# the cap allows: SKNet-50's select kernel went from 64 registers (50%) to 110 (25%); a GPU measurement
# decides whether a lower cap pays (96 is spill-free everywhere but the apply kernel). Found and checked, for every
# specialization, by tests/kernels/test_compile.py. Maps in fp64 (two registers a value; a correctness
# dtype, not a speed path) get 8 warps and may use all 255 registers.
MAX_REGISTERS = 128


def _launch_options(paths: int, dtype: torch.dtype, contiguous: int) -> dict[str, int]:
    """`contiguous`: the length of the maps' contiguous axis (C for channels_last, H·W for NCHW)."""
    if dtype == torch.float64:
        return {"num_warps": 8, "maxnreg": 255}
    warps = 16 if paths == MAX_PATHS else 8 if contiguous % 16 else 4
    return {"num_warps": warps, "maxnreg": MAX_REGISTERS}


# The backward reduce kernel keeps 4·M accumulators live across its loop next to its tiles: to fit in 128
# registers without spilling, each thread holds 4 elements of a tile (half the others' tile over 8 warps),
# 2 for M = 3 (16 warps), 1 for fp64 (a quarter tile over 16 warps). Checked for every specialization by
# tests/kernels/test_compile.py; the figures are in benchmarks/RESULTS.md (benchmarks/kernel_resources.py).
def _reduce_blocks(channels_last: bool, dtype: torch.dtype) -> tuple[int, int]:
    block_c, block_hw = _blocks(channels_last)
    return block_c, block_hw // (4 if dtype == torch.float64 else 2)


def _reduce_launch_options(paths: int, dtype: torch.dtype) -> dict[str, int]:
    warps = 16 if paths == MAX_PATHS or dtype == torch.float64 else 8
    return {"num_warps": warps, "maxnreg": MAX_REGISTERS}


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: fp32, or fp64 for fp64 maps."""
    return torch.float64 if dtype == torch.float64 else torch.float32


if triton is not None:
    # The same row numbers as compile-time constants (jitted code reads only constexpr globals).
    _MEAN, _INVSTD, _GAMMA, _BETA = (tl.constexpr(r) for r in (MEAN, INVSTD, GAMMA, BETA))
    _DBETA_MEAN, _DGAMMA_MEAN, _ROWS = (tl.constexpr(r) for r in (DBETA_MEAN, DGAMMA_MEAN, ROWS))

    @triton.jit
    def _tile(base, n, cs, hw, sn, sc, shw):
        """Pointers of the (BLOCK_HW, BLOCK_C) tile of sample n (mask it with :func:`_inside`)."""
        # The sample's base in 64 bits (N·C·H·W may pass 2³¹), offsets inside it in 32 (C·H·W < 2³¹: the
        # operators check): 64-bit arithmetic per element costs registers.
        return (base + n.to(tl.int64) * sn) + (hw[:, None] * shw + cs[None, :] * sc)

    @triton.jit
    def _inside(cs, hw, C, HW):
        """Which elements of the (BLOCK_HW, BLOCK_C) tile lie inside the map."""
        return (hw[:, None] < HW) & (cs[None, :] < C)

    @triton.jit
    def _chunk(out, n, cs, HW, CHUNK, row_size):
        """The H×W positions [first, stop) of this program's chunk (program_id(2)) and its output row."""
        k = tl.program_id(2)
        first = k * CHUNK
        row = out + (n * tl.num_programs(2) + k) * row_size + cs
        return first, tl.minimum(first + CHUNK, HW), row

    @triton.jit
    def _path_moments(
        c_ptr, n, cs, C, HW, first, stop, sn, sc, shw,
        ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):  # fmt: skip
        """Mean and sum of squared deviations over positions [first, stop) of sample n, channels cs (Chan's
        parallel update)."""
        mean = tl.zeros((BLOCK_C,), dtype=ACC)
        m2 = tl.zeros((BLOCK_C,), dtype=ACC)
        for start in range(first, stop, BLOCK_HW):
            hw = start + tl.arange(0, BLOCK_HW)
            mask = _inside(cs, hw, C, HW)
            x = tl.load(_tile(c_ptr, n, cs, hw, sn, sc, shw), mask=mask, other=0.0).to(ACC)
            count = tl.cast(start - first, ACC)  # elements already combined (every earlier block was full)
            nb = tl.cast(tl.minimum(stop - start, BLOCK_HW), ACC)
            block_mean = tl.sum(x, axis=0) / nb
            dev = tl.where(mask, x - block_mean[None, :], 0.0)
            block_m2 = tl.sum(dev * dev, axis=0)
            total = count + nb
            delta = block_mean - mean
            mean += delta * (nb / total)
            m2 += block_m2 + delta * delta * (count * nb / total)
        return mean, m2

    @triton.jit
    def _stats_kernel(
        c0, c1, c2, out, C, HW, CHUNK, sn, sc, shw,
        M: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):  # fmt: skip
        """out[n, k, m, 0, c], out[n, k, m, 1, c]: mean and M2 of c_m over chunk k of H×W."""
        n = tl.program_id(0)
        cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        first, stop, row = _chunk(out, n, cs, HW, CHUNK, M * 2 * C)
        c_ok = cs < C
        mean, m2 = _path_moments(c0, n, cs, C, HW, first, stop, sn, sc, shw, ACC, BLOCK_C, BLOCK_HW)
        tl.store(row, mean, mask=c_ok)
        tl.store(row + C, m2, mask=c_ok)
        if M > 1:
            mean, m2 = _path_moments(c1, n, cs, C, HW, first, stop, sn, sc, shw, ACC, BLOCK_C, BLOCK_HW)
            tl.store(row + 2 * C, mean, mask=c_ok)
            tl.store(row + 3 * C, m2, mask=c_ok)
        if M > 2:
            mean, m2 = _path_moments(c2, n, cs, C, HW, first, stop, sn, sc, shw, ACC, BLOCK_C, BLOCK_HW)
            tl.store(row + 4 * C, mean, mask=c_ok)
            tl.store(row + 5 * C, m2, mask=c_ok)

    @triton.jit
    def _bn(chan, m, cs, C, ACC: tl.constexpr):
        """Path m's per-channel (mean, invstd, γ, β) from the table `chan`."""
        base = chan + m * (_ROWS * C) + cs
        c_ok = cs < C
        mean = tl.load(base + _MEAN * C, mask=c_ok, other=0.0).to(ACC)
        invstd = tl.load(base + _INVSTD * C, mask=c_ok, other=0.0).to(ACC)
        gamma = tl.load(base + _GAMMA * C, mask=c_ok, other=0.0).to(ACC)
        beta = tl.load(base + _BETA * C, mask=c_ok, other=0.0).to(ACC)
        return mean, invstd, gamma, beta

    @triton.jit
    def _affine(chan, m, cs, C, ACC: tl.constexpr):
        """Per-channel (scale, shift) of u = ReLU(scale·c + shift) for path m."""
        mean, invstd, gamma, beta = _bn(chan, m, cs, C, ACC)
        scale = gamma * invstd
        return scale, beta - mean * scale

    @triton.jit
    def _relu_bn(c_ptr, scale, shift, n, cs, hw, mask, sn, sc, shw, ACC: tl.constexpr):
        """u = ReLU(scale·c + shift) over one tile of c, 0 outside the map."""
        x = tl.load(_tile(c_ptr, n, cs, hw, sn, sc, shw), mask=mask, other=0.0).to(ACC)
        return tl.where(mask, tl.maximum(x * scale[None, :] + shift[None, :], 0.0), 0.0)

    @triton.jit
    def _pool_kernel(
        c0, c1, c2, chan, s, C, HW, CHUNK, sn, sc, shw,
        M: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):  # fmt: skip
        """s[n, k, c] = Σ_m Σ_(chunk k of H×W) ReLU(scale_m·c_m + shift_m)."""
        n = tl.program_id(0)
        cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        first, stop, row = _chunk(s, n, cs, HW, CHUNK, C)
        scale0, shift0 = _affine(chan, 0, cs, C, ACC)
        scale1, shift1 = _affine(chan, 1, cs, C, ACC)  # `chan` always has MAX_PATHS rows
        scale2, shift2 = _affine(chan, 2, cs, C, ACC)
        acc = tl.zeros((BLOCK_C,), dtype=ACC)
        for start in range(first, stop, BLOCK_HW):
            hw = start + tl.arange(0, BLOCK_HW)
            mask = _inside(cs, hw, C, HW)
            u = _relu_bn(c0, scale0, shift0, n, cs, hw, mask, sn, sc, shw, ACC)
            if M > 1:
                u += _relu_bn(c1, scale1, shift1, n, cs, hw, mask, sn, sc, shw, ACC)
            if M > 2:
                u += _relu_bn(c2, scale2, shift2, n, cs, hw, mask, sn, sc, shw, ACC)
            acc += tl.sum(u, axis=0)
        tl.store(row, acc, mask=cs < C)

    @triton.jit
    def _select_kernel(
        c0, c1, c2, chan, a, v, C, HW, sn, sc, shw,
        M: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):  # fmt: skip
        """V = Σ_m a[n, m, c]·ReLU(scale_m·c_m + shift_m), one tile of one sample."""
        n = tl.program_id(0)
        cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        hw = tl.program_id(2) * BLOCK_HW + tl.arange(0, BLOCK_HW)
        c_ok = cs < C
        mask = _inside(cs, hw, C, HW)
        a_row = a + n * (M * C) + cs
        scale, shift = _affine(chan, 0, cs, C, ACC)
        weight = tl.load(a_row, mask=c_ok, other=0.0).to(ACC)
        acc = _relu_bn(c0, scale, shift, n, cs, hw, mask, sn, sc, shw, ACC) * weight[None, :]
        if M > 1:
            scale, shift = _affine(chan, 1, cs, C, ACC)
            weight = tl.load(a_row + C, mask=c_ok, other=0.0).to(ACC)
            acc += _relu_bn(c1, scale, shift, n, cs, hw, mask, sn, sc, shw, ACC) * weight[None, :]
        if M > 2:
            scale, shift = _affine(chan, 2, cs, C, ACC)
            weight = tl.load(a_row + 2 * C, mask=c_ok, other=0.0).to(ACC)
            acc += _relu_bn(c2, scale, shift, n, cs, hw, mask, sn, sc, shw, ACC) * weight[None, :]
        tl.store(_tile(v, n, cs, hw, sn, sc, shw), acc.to(v.dtype.element_ty), mask=mask)

    @triton.jit
    def _path_sums(c_ptr, g, chan, m, n, cs, hw, mask, C, sn, sc, shw, ACC: tl.constexpr):
        """Tile sums over H×W of mask·g, mask·g·x̂, mask, mask·x̂ for path m."""
        mean, invstd, gamma, beta = _bn(chan, m, cs, C, ACC)
        x = tl.load(_tile(c_ptr, n, cs, hw, sn, sc, shw), mask=mask, other=0.0).to(ACC)
        xhat = (x - mean[None, :]) * invstd[None, :]
        on = mask & (xhat * gamma[None, :] + beta[None, :] > 0)
        gm = tl.where(on, g, 0.0)
        xm = tl.where(on, xhat, 0.0)
        return tl.sum(gm, axis=0), tl.sum(gm * xhat, axis=0), tl.sum(on.to(ACC), axis=0), tl.sum(xm, axis=0)

    @triton.jit
    def _bwd_reduce_kernel(
        g_ptr, c0, c1, c2, chan, out, C, HW, CHUNK, sn, sc, shw,
        M: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):  # fmt: skip
        """out[n, k, m, 0..3, c] = P1..P4 (see the module docstring) over chunk k of H×W."""
        n = tl.program_id(0)
        cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        first, stop, row = _chunk(out, n, cs, HW, CHUNK, M * 4 * C)
        c_ok = cs < C
        p10 = tl.zeros((BLOCK_C,), dtype=ACC)
        p20, p30, p40 = p10, p10, p10
        p11, p21, p31, p41 = p10, p10, p10, p10
        p12, p22, p32, p42 = p10, p10, p10, p10
        for start in range(first, stop, BLOCK_HW):
            hw = start + tl.arange(0, BLOCK_HW)
            mask = _inside(cs, hw, C, HW)
            g = tl.load(_tile(g_ptr, n, cs, hw, sn, sc, shw), mask=mask, other=0.0).to(ACC)
            q1, q2, q3, q4 = _path_sums(c0, g, chan, 0, n, cs, hw, mask, C, sn, sc, shw, ACC)
            p10 += q1
            p20 += q2
            p30 += q3
            p40 += q4
            if M > 1:
                q1, q2, q3, q4 = _path_sums(c1, g, chan, 1, n, cs, hw, mask, C, sn, sc, shw, ACC)
                p11 += q1
                p21 += q2
                p31 += q3
                p41 += q4
            if M > 2:
                q1, q2, q3, q4 = _path_sums(c2, g, chan, 2, n, cs, hw, mask, C, sn, sc, shw, ACC)
                p12 += q1
                p22 += q2
                p32 += q3
                p42 += q4
        tl.store(row, p10, mask=c_ok)
        tl.store(row + C, p20, mask=c_ok)
        tl.store(row + 2 * C, p30, mask=c_ok)
        tl.store(row + 3 * C, p40, mask=c_ok)
        if M > 1:
            tl.store(row + 4 * C, p11, mask=c_ok)
            tl.store(row + 5 * C, p21, mask=c_ok)
            tl.store(row + 6 * C, p31, mask=c_ok)
            tl.store(row + 7 * C, p41, mask=c_ok)
        if M > 2:
            tl.store(row + 8 * C, p12, mask=c_ok)
            tl.store(row + 9 * C, p22, mask=c_ok)
            tl.store(row + 10 * C, p32, mask=c_ok)
            tl.store(row + 11 * C, p42, mask=c_ok)

    @triton.jit
    def _path_grad(c_ptr, dc_ptr, g, k, a_row, chan, m, n, cs, hw, mask, C, sn, sc, shw, ACC: tl.constexpr):
        """dL/dc_m of one tile: γσ⁻¹·(mask·(a_m·g + k) − dβ/(N·HW) − x̂·dγ/(N·HW))."""
        c_ok = cs < C
        mean, invstd, gamma, beta = _bn(chan, m, cs, C, ACC)
        base = chan + m * (_ROWS * C) + cs
        dbeta_mean = tl.load(base + _DBETA_MEAN * C, mask=c_ok, other=0.0).to(ACC)
        dgamma_mean = tl.load(base + _DGAMMA_MEAN * C, mask=c_ok, other=0.0).to(ACC)
        weight = tl.load(a_row + m * C, mask=c_ok, other=0.0).to(ACC)
        x = tl.load(_tile(c_ptr, n, cs, hw, sn, sc, shw), mask=mask, other=0.0).to(ACC)
        xhat = (x - mean[None, :]) * invstd[None, :]
        on = xhat * gamma[None, :] + beta[None, :] > 0
        dz = tl.where(on, g * weight[None, :] + k[None, :], 0.0)
        dc = (gamma * invstd)[None, :] * (dz - dbeta_mean[None, :] - xhat * dgamma_mean[None, :])
        tl.store(_tile(dc_ptr, n, cs, hw, sn, sc, shw), dc.to(dc_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _bwd_apply_kernel(
        g_ptr, c0, c1, c2, d0, d1, d2, chan, a, k_ptr, C, HW, sn, sc, shw,
        M: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):  # fmt: skip
        n = tl.program_id(0)
        cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        hw = tl.program_id(2) * BLOCK_HW + tl.arange(0, BLOCK_HW)
        mask = _inside(cs, hw, C, HW)
        g = tl.load(_tile(g_ptr, n, cs, hw, sn, sc, shw), mask=mask, other=0.0).to(ACC)
        k = tl.load(k_ptr + n * C + cs, mask=cs < C, other=0.0).to(ACC)
        a_row = a + n * (M * C) + cs
        _path_grad(c0, d0, g, k, a_row, chan, 0, n, cs, hw, mask, C, sn, sc, shw, ACC)
        if M > 1:
            _path_grad(c1, d1, g, k, a_row, chan, 1, n, cs, hw, mask, C, sn, sc, shw, ACC)
        if M > 2:
            _path_grad(c2, d2, g, k, a_row, chan, 2, n, cs, hw, mask, C, sn, sc, shw, ACC)


# --------------------------------------------------------------------------------------- operators
# Each launch is a PyTorch custom operator: torch.compile traces through it without a graph break (the
# fake implementation states the output's shape and strides; the launch itself stays opaque to the
# compiler) and CUDA graphs can capture it (outputs are allocated on the device; nothing is read back to
# the host). Real and fake implementations lay out their outputs by the same rule (`canonical`), so the
# strides a compiled graph plans for are the strides it gets.
def _tl_acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def canonical(t: torch.Tensor) -> torch.Tensor:
    """`t` if it is dense NCHW or channels_last (H×W then walks as one axis of stride stride(3)), else a
    contiguous copy. Outputs made with empty_like of it have exactly its strides."""
    return t if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last) else t.contiguous()


def like(ref: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """`t` with exactly the strides and dtype of `ref` (the kernels take one set of strides for all maps)."""
    if t.stride() == ref.stride() and t.dtype == ref.dtype:
        return t
    return torch.empty_like(ref).copy_(t)


def _aligned(cs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    first = canonical(cs[0])
    return (first, *(like(first, c) for c in cs[1:]))


def _geometry(ref: torch.Tensor) -> tuple[int, int, int, int, int, int, bool]:
    n, c, h, w = ref.shape
    if c * h * w >= MAX_SAMPLE_ELEMENTS:
        raise ValueError(f"the fused SK tail takes maps of < 2^31 elements per sample, got C·H·W = {c}·{h}·{w}")
    channels_last = ref.stride(1) == 1 and c > 1
    return n, c, h * w, ref.stride(0), ref.stride(1), ref.stride(3), channels_last


def _padded(ts: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(ts) + (ts[0],) * (MAX_PATHS - len(ts))  # unused slots are never read


def _sums_shape(cs: list[torch.Tensor], rows: int) -> tuple[int, int, int, int]:
    return cs[0].shape[0], len(cs), rows, cs[0].shape[1]


@torch.library.custom_op("sknet::sk_tail_moments", mutates_args=())
def moments(cs: list[torch.Tensor]) -> torch.Tensor:
    """(N, M, 2, C): per sample, path and channel, the mean and M2 (Σ squared deviations) over H×W."""
    cs = _aligned(cs)
    n, c, hw, sn, sc, shw, channels_last = _geometry(cs[0])
    block_c, block_hw = _blocks(channels_last)
    chunk, split = _chunking(n, c, hw, block_c, block_hw)
    parts = cs[0].new_empty(n, split, len(cs), 2, c, dtype=acc_dtype(cs[0].dtype))
    launch(
        _stats_kernel,
        (n, triton.cdiv(c, block_c), split),
        *_padded(cs), parts, c, hw, chunk, sn, sc, shw,
        M=len(cs), ACC=_tl_acc(parts.dtype), BLOCK_C=block_c, BLOCK_HW=block_hw,
        **_launch_options(len(cs), cs[0].dtype, c if channels_last else hw),
    )  # fmt: skip
    if split == 1:
        return parts[:, 0]
    # Chan's combination of the chunks: mean = Σ w_k·mean_k, M2 = Σ M2_k + Σ n_k·(mean_k − mean)².
    counts = torch.full((split,), chunk, dtype=parts.dtype, device=parts.device)
    counts[-1] = hw - (split - 1) * chunk
    chunk_means, chunk_m2 = parts[:, :, :, 0], parts[:, :, :, 1]  # (N, K, M, C)
    mean = torch.einsum("nkmc,k->nmc", chunk_means, counts / hw)
    m2 = chunk_m2.sum(1) + torch.einsum("nkmc,k->nmc", (chunk_means - mean[:, None]).square(), counts)
    return torch.stack([mean, m2], dim=2)


@moments.register_fake
def _(cs):
    return cs[0].new_empty(_sums_shape(cs, 2), dtype=acc_dtype(cs[0].dtype))


@torch.library.custom_op("sknet::sk_tail_pool", mutates_args=())
def pool(cs: list[torch.Tensor], chan: torch.Tensor) -> torch.Tensor:
    """s (N, C) = Σ_m mean_HW u_m, in the accumulation dtype."""
    cs = _aligned(cs)
    n, c, hw, sn, sc, shw, channels_last = _geometry(cs[0])
    block_c, block_hw = _blocks(channels_last)
    chunk, split = _chunking(n, c, hw, block_c, block_hw)
    sums = cs[0].new_empty(n, split, c, dtype=chan.dtype)
    launch(
        _pool_kernel,
        (n, triton.cdiv(c, block_c), split),
        *_padded(cs), chan.contiguous(), sums, c, hw, chunk, sn, sc, shw,
        M=len(cs), ACC=_tl_acc(chan.dtype), BLOCK_C=block_c, BLOCK_HW=block_hw,
        **_launch_options(len(cs), cs[0].dtype, c if channels_last else hw),
    )  # fmt: skip
    return sums.sum(1) / hw


@pool.register_fake
def _(cs, chan):
    return cs[0].new_empty(cs[0].shape[:2], dtype=chan.dtype)


@torch.library.custom_op("sknet::sk_tail_select", mutates_args=())
def select(cs: list[torch.Tensor], chan: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """V = Σ_m a_m ⊙ u_m (attention: (N, M, C)) in the layout and dtype of c_1."""
    cs = _aligned(cs)
    n, c, hw, sn, sc, shw, channels_last = _geometry(cs[0])
    v = torch.empty_like(cs[0])
    a = attention.to(chan.dtype).contiguous()
    block_c, block_hw = _blocks(channels_last)
    launch(
        _select_kernel,
        (n, triton.cdiv(c, block_c), triton.cdiv(hw, block_hw)),
        *_padded(cs), chan.contiguous(), a, v, c, hw, sn, sc, shw,
        M=len(cs), ACC=_tl_acc(chan.dtype), BLOCK_C=block_c, BLOCK_HW=block_hw,
        **_launch_options(len(cs), cs[0].dtype, c if channels_last else hw),
    )  # fmt: skip
    return v


@select.register_fake
def _(cs, chan, attention):
    return torch.empty_like(canonical(cs[0]))


@torch.library.custom_op("sknet::sk_tail_backward_sums", mutates_args=())
def backward_sums(grad_v: torch.Tensor, cs: list[torch.Tensor], chan: torch.Tensor) -> torch.Tensor:
    """(N, M, 4, C): P1..P4 of the module docstring."""
    cs = _aligned(cs)
    n, c, hw, sn, sc, shw, channels_last = _geometry(cs[0])
    block_c, block_hw = _reduce_blocks(channels_last, cs[0].dtype)
    chunk, split = _chunking(n, c, hw, block_c, block_hw)
    parts = cs[0].new_empty(n, split, len(cs), 4, c, dtype=chan.dtype)
    launch(
        _bwd_reduce_kernel,
        (n, triton.cdiv(c, block_c), split),
        like(cs[0], grad_v), *_padded(cs), chan.contiguous(), parts, c, hw, chunk, sn, sc, shw,
        M=len(cs), ACC=_tl_acc(chan.dtype), BLOCK_C=block_c, BLOCK_HW=block_hw,
        **_reduce_launch_options(len(cs), chan.dtype),
    )  # fmt: skip
    return parts.sum(1)


@backward_sums.register_fake
def _(grad_v, cs, chan):
    return cs[0].new_empty(_sums_shape(cs, 4), dtype=chan.dtype)


@torch.library.custom_op("sknet::sk_tail_backward_apply", mutates_args=())
def backward_apply(
    grad_v: torch.Tensor, cs: list[torch.Tensor], chan: torch.Tensor, attention: torch.Tensor, k: torch.Tensor
) -> list[torch.Tensor]:
    """[dL/dc_m] in the layout and dtype of c_1; `chan` holds dβ/(N·HW) and dγ/(N·HW) in its last rows,
    k (N, C) is (dL/ds)/HW."""
    cs = _aligned(cs)
    n, c, hw, sn, sc, shw, channels_last = _geometry(cs[0])
    grads = [torch.empty_like(cs[0]) for _ in cs]
    a = attention.to(chan.dtype).contiguous()
    block_c, block_hw = _blocks(channels_last)
    launch(
        _bwd_apply_kernel,
        (n, triton.cdiv(c, block_c), triton.cdiv(hw, block_hw)),
        like(cs[0], grad_v), *_padded(cs), *_padded(tuple(grads)), chan.contiguous(), a,
        k.to(chan.dtype).contiguous(), c, hw, sn, sc, shw,
        M=len(cs), ACC=_tl_acc(chan.dtype), BLOCK_C=block_c, BLOCK_HW=block_hw,
        **_launch_options(len(cs), cs[0].dtype, c if channels_last else hw),
    )  # fmt: skip
    return grads


@backward_apply.register_fake
def _(grad_v, cs, chan, attention, k):
    ref = canonical(cs[0])
    return [torch.empty_like(ref) for _ in cs]
