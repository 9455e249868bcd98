"""Activation memory a training forward keeps for backward: SKNet-50 with the fused CUDA tail, SKNet-50 on
the plain composition (its SK layers' ``tails = ()``: their own forward), ResNeXt-50.

What autograd saves does not depend on the device, so without a GPU the fused tail's kernels run in
Triton's interpreter on the CPU (slow, but one forward per model is all it takes); with one, on the GPU.
Counts distinct storages handed to autograd's saved-tensor hooks, parameters excluded (as `sknet bench`).

    python benchmarks/saved_memory.py [--batch 2] [--size 224] [--dtype bf16|fp32]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

if not torch.cuda.is_available():  # before the kernels are imported: Triton reads this when it compiles
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("SKNET_FORCE_TRITON", "1")

from sknet.layers import SKConv2d
from sknet.models import create_model


def saved_mib(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> float:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
    ):
        model(x).float().sum()
    return sum(seen.values()) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16", help="bf16: autocast (default)")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if args.dtype == "bf16" else None
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).to(memory_format=torch.channels_last)
    found = {}
    for label, name, fused in (
        ("resnext50", "resnext50", True),
        ("sknet50 (fused tail)", "sknet50", True),
        ("sknet50 plain tail", "sknet50", False),
    ):
        model = create_model(name).train().to(device, memory_format=torch.channels_last)
        for module in model.modules():
            if isinstance(module, SKConv2d) and not fused:
                module.tails = ()
        found[label] = saved_mib(model, x, dtype)
    where = "the GPU" if device == "cuda" else "the CPU (kernels in Triton's interpreter)"
    print(f"activation memory kept for backward: batch {args.batch}, {args.size}², {args.dtype}, channels_last")
    print(f"on {where}")
    for label, mib in found.items():
        print(f"  {label:<22} {mib:8.1f} MiB  {mib / found['resnext50']:.3f}× resnext50")
    return 0


if __name__ == "__main__":
    sys.exit(main())
