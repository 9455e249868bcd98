"""A traffic model of the fused SK tail: the bytes each kernel must move per training step, and the time
that takes at a GPU's memory bandwidth — the floor under the tail's time (a model, not a measurement).

Per SK layer with M path maps c_m of N×C×H×W elements (``e`` bytes each) and its gradient dL/dV (same
size), the kernels of :mod:`sknet.kernels.sk_tail_triton` read and write (see its docstring):

    forward   stats     reads c_1..c_M                       writes per-chunk moments (N·K·M·2·C, fp32)
              pool      reads c_1..c_M                       writes per-chunk sums (N·K·C, fp32)
              select    reads c_1..c_M                       writes V (one map)
    backward  reduce    reads dL/dV, c_1..c_M                writes per-chunk sums (N·K·M·4·C, fp32)
              apply     reads dL/dV, c_1..c_M                writes dL/dc_1..dL/dc_M

K is the launcher's own chunking of H×W; the per-channel tables (M·6·C) and the attention (N·M·C) are
counted too. Nothing is assumed about caches: every map read is counted as DRAM traffic, which is what a
map far larger than L2 (SKNet-50's, at batch 128) costs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sknet.kernels import sk_tail_triton as K

H100_BANDWIDTH = 3.35e12  # bytes/s: NVIDIA H100 SXM5 80GB datasheet, HBM3
KERNELS = ("stats", "pool", "select", "reduce", "apply")  # in launch order of a training step


@dataclass(frozen=True)
class TailShape:
    """One SK layer's path maps: batch, channels, height, width, paths, element dtype."""

    n: int
    c: int
    h: int
    w: int
    paths: int
    dtype: torch.dtype


def layer_traffic(shape: TailShape, channels_last: bool = True) -> dict[str, tuple[int, int]]:
    """kernel → (bytes read, bytes written) for one training step of one SK layer."""
    n, c, hw, m, e = shape.n, shape.c, shape.h * shape.w, shape.paths, shape.dtype.itemsize
    acc = K.acc_dtype(shape.dtype).itemsize
    map_bytes = n * c * hw * e
    table = K.MAX_PATHS * K.ROWS * c * acc
    attention = n * m * c * acc
    block_c, block_hw = K._blocks(channels_last)
    _, split = K._chunking(n, c, hw, block_c, block_hw)
    _, split_reduce = K._chunking(n, c, hw, *K._reduce_blocks(channels_last, shape.dtype))
    return {
        "stats": (m * map_bytes, n * split * m * 2 * c * acc),
        "pool": (m * map_bytes + table, n * split * c * acc),
        "select": (m * map_bytes + table + attention, map_bytes),
        "reduce": ((1 + m) * map_bytes + table, n * split_reduce * m * 4 * c * acc),
        "apply": ((1 + m) * map_bytes + table + attention + n * c * acc, m * map_bytes),
    }


def step_traffic(shapes: list[TailShape], channels_last: bool = True) -> dict[str, tuple[int, int]]:
    """kernel → (bytes read, bytes written) summed over the SK layers of a network, one training step."""
    total = {k: (0, 0) for k in KERNELS}
    for shape in shapes:
        for kernel, (r, w) in layer_traffic(shape, channels_last).items():
            total[kernel] = (total[kernel][0] + r, total[kernel][1] + w)
    return total


def floor_seconds(traffic: dict[str, tuple[int, int]], bandwidth: float = H100_BANDWIDTH) -> dict[str, float]:
    """kernel → the time its bytes take at `bandwidth` (bytes/s): no kernel can be faster."""
    return {kernel: (r + w) / bandwidth for kernel, (r, w) in traffic.items()}
