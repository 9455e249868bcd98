"""Optional fused kernels (Triton) used on CUDA; the PyTorch code paths are the reference and fallback."""
