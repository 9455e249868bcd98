"""What each fast SK tail gains over the layer's own forward, side by side in one process.

For every tail of ``sknet.layers.sk_tails.TAILS`` and each SK layer shape of SKNet-50 (the stride-1 middle
layers of stages 2–4), one training step (forward + backward) of the same layer with only that tail allowed
and with none (``layer.tails = ()``): the median time over interleaved rounds, and the activation memory the
forward keeps for backward (saved-tensor hooks, parameters excluded). A tail that does not apply on this
device and dtype says why (its ``supports``). On a CPU the lean tail runs (fp32); on a CUDA GPU the fused
one (bf16 autocast by default).

    python benchmarks/sk_tails.py                     # batch 16, 9 rounds
    python benchmarks/sk_tails.py --device cuda --batch 64 --json results/x.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from sknet import SKConv2d
from sknet.layers import sk_tails

SHAPES = ((128, 56), (256, 28), (512, 14))  # (channels, side) of SKNet-50's SK layers at 224×224


def _step(layer: SKConv2d, x: torch.Tensor, autocast: torch.dtype | None) -> None:
    with torch.autocast(x.device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
        out = layer(x)
    out.float().square().mean().backward()


def saved_mib(layer: SKConv2d, x: torch.Tensor, autocast: torch.dtype | None) -> float:
    params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast(x.device.type, dtype=autocast or torch.float32, enabled=autocast is not None),
    ):
        layer(x)
    return sum(seen.values()) / 2**20


def measure(tail: str, channels: int, side: int, batch: int, rounds: int, device: str, autocast) -> dict:
    """One tail against the plain forward on one shape: times (ms), memory (MiB) and their ratios, or why the
    tail does not apply."""
    torch.manual_seed(0)
    fmt = torch.channels_last
    layer = SKConv2d(channels, channels).train().to(device, memory_format=fmt)
    x = torch.randn(batch, channels, side, side, device=device).to(memory_format=fmt).requires_grad_(True)
    fast = layer
    fast.tails = (tail,)
    with torch.autocast(device, dtype=autocast or torch.float32, enabled=autocast is not None):
        why = sk_tails.reasons(layer, [path.conv(x) for path in layer.paths])[tail]
    if why is not None:
        return {"tail": tail, "channels": channels, "side": side, "applies": False, "why": why}
    plain = SKConv2d(channels, channels).train().to(device, memory_format=fmt)
    plain.load_state_dict(layer.state_dict())
    plain.tails = ()
    times: dict[str, list[float]] = {"tail": [], "plain": []}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):  # warm-up (kernels compile, allocators settle)
        _step(fast, x, autocast), _step(plain, x, autocast)
    for _ in range(rounds):
        for key, module in (("tail", fast), ("plain", plain)):
            sync()
            start = time.perf_counter()
            _step(module, x, autocast)
            sync()
            times[key].append((time.perf_counter() - start) * 1e3)
    ms = {key: statistics.median(values) for key, values in times.items()}
    mib = {"tail": saved_mib(fast, x, autocast), "plain": saved_mib(plain, x, autocast)}
    return {
        "tail": tail,
        "channels": channels,
        "side": side,
        "applies": True,
        "ms": ms,
        "saved_mib": mib,
        "time_ratio": ms["tail"] / ms["plain"],
        "memory_ratio": mib["tail"] / mib["plain"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds per variant (median)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], help="bf16: autocast (default on CUDA); fp32 on CPUs")
    parser.add_argument("--scale", type=int, default=1, help="divide every shape's channels and side by this (smoke)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.batch < 2 or args.rounds < 1 or args.scale < 1:
        parser.error("--batch ≥ 2, --rounds ≥ 1 and --scale ≥ 1")
    dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    autocast = torch.bfloat16 if dtype == "bf16" else None
    torch.backends.cudnn.benchmark = True
    print(f"SK tails vs the plain forward: one SK layer's training step, batch {args.batch}, {dtype}, {args.device}")
    columns = ("tail ms", "plain ms", "time", "tail MiB", "plain MiB", "memory")
    print(f"  {'tail':<7} {'C × side':<11} " + " ".join(f"{c:>9}" for c in columns))
    results = []
    for tail in sk_tails.TAILS:
        for channels, side in SHAPES:
            c, s = channels // args.scale, max(side // args.scale, 2)
            found = measure(tail.name, c, s, args.batch, args.rounds, args.device, autocast)
            results.append(found)
            shape = f"{c} × {s}"
            if not found["applies"]:
                print(f"  {tail.name:<7} {shape:<11} does not apply here: {found['why']}")
                continue
            ms, mib = found["ms"], found["saved_mib"]
            cells = (f"{ms['tail']:.2f}", f"{ms['plain']:.2f}", f"{found['time_ratio']:.3f}×")
            cells += (f"{mib['tail']:.1f}", f"{mib['plain']:.1f}", f"{found['memory_ratio']:.3f}×")
            print(f"  {tail.name:<7} {shape:<11} " + " ".join(f"{c:>9}" for c in cells), flush=True)
    if args.json:
        report = {"device": args.device, "dtype": dtype, "batch": args.batch, "rounds": args.rounds}
        report["threads"] = torch.get_num_threads()
        args.json.write_text(json.dumps({**report, "results": results}, indent=2))
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
