"""Optional fused kernels (Triton) used on CUDA; the PyTorch code paths are the reference and fallback."""

from __future__ import annotations

import os

import torch

try:
    import triton  # noqa: F401  (ships with CUDA builds of torch)

    HAVE_TRITON = True
except ImportError:  # pragma: no cover
    HAVE_TRITON = False


# One sample's map must have fewer elements than this: the kernels index inside a sample in 32 bits (the
# sample's base is 64-bit); the operators and their dispatch checks decline or refuse at this size.
MAX_SAMPLE_ELEMENTS = 2**31


def kernels_run_on(t: torch.Tensor) -> bool:
    """Whether the Triton kernels run for `t`: on CUDA (triton ships with CUDA builds of torch), or in
    Triton's interpreter on the CPU when forced (TRITON_INTERPRET=1 and SKNET_FORCE_TRITON=1: how the CPU
    tests run them)."""
    if not HAVE_TRITON:
        return False
    if t.is_cuda:
        return True
    return os.environ.get("SKNET_FORCE_TRITON") == "1" and os.environ.get("TRITON_INTERPRET") == "1"
