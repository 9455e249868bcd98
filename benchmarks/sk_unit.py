"""What does the SK step cost on top of its two convolution paths? One layer, training step, side by side.

For each middle layer of ResNeXt-50/SKNet-50 (the three stride-1 shapes of stages 2–4, batch 16), times a
forward + backward of:

    grouped 3×3          ResNeXt's middle: conv → BN → ReLU (the baseline)
    3×3 + 3×3 d2, sum    SKNet's two paths, outputs added, no attention (Table 7's "SK ✗")
    SK, plain autograd   SKConv2d composed of standard modules and ops
    SK (sknet)           SKConv2d as it trains: the one-node lean tail of sknet.layers.sk_tails.lean

    python benchmarks/sk_unit.py                 # channels_last, 7 rounds, median
    python benchmarks/sk_unit.py --repeats 11 --batch-size 32

The gap between "sum" and "SK (sknet)" is all the attention plumbing costs; "SK, plain autograd" shows what
it costs without the fused tail.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from sknet import SKConv2d
from sknet.layers import ConvBNAct

# (channels, spatial side) of the SK middle layers of SKNet-50's stages 2–4 at 224×224
SHAPES = ((128, 56), (256, 28), (512, 14))


def _plain_autograd(layer: SKConv2d) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        layer.tails = ()  # the layer's own forward
        try:
            return layer(x)
        finally:
            layer.tails = None

    return run


def variants(channels: int, groups: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    fmt = torch.channels_last
    sk = SKConv2d(channels, channels, groups=groups).train().to(memory_format=fmt)
    return {
        "grouped 3×3": ConvBNAct(channels, channels, 3, groups=groups).train().to(memory_format=fmt),
        "3×3 + 3×3 d2, sum": SKConv2d(channels, channels, groups=groups, aggregation="sum")
        .train()
        .to(memory_format=fmt),
        "SK, plain autograd": _plain_autograd(sk),
        "SK (sknet)": sk,
    }


def time_unit(channels: int, side: int, batch: int, repeats: int, groups: int = 32) -> dict[str, float]:
    """Median milliseconds of one forward + backward per variant, rounds interleaved."""
    torch.manual_seed(0)
    x = torch.randn(batch, channels, side, side).to(memory_format=torch.channels_last).requires_grad_(True)
    grad = torch.randn_like(x)
    runs = variants(channels, groups)
    # the two SK variants are one layer run two ways: same function, or the timings mean nothing
    torch.testing.assert_close(runs["SK (sknet)"](x), runs["SK, plain autograd"](x))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(repeats + 1):
        for name, run in runs.items():
            start = time.perf_counter()
            run(x).backward(grad)
            if round_:  # the first round warms up
                times[name].append((time.perf_counter() - start) * 1000)
            x.grad = None
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--scale", type=int, default=1, help="divide channels and side by this (smoke runs)")
    args = parser.parse_args(argv)
    print(
        f"SK layer training step (forward + backward), batch {args.batch_size}, channels_last, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    for channels, side in SHAPES:
        channels, side = channels // args.scale, side // args.scale
        result = time_unit(channels, side, args.batch_size, args.repeats, groups=min(32, channels // 4))
        base = result["grouped 3×3"]
        print(f"  C={channels}, {side}×{side}")
        for name, ms in result.items():
            print(f"    {name:20s} {ms:8.1f} ms  {ms / base:5.2f}× the grouped 3×3")
        print(
            f"    SK (sknet) / sum: {result['SK (sknet)'] / result['3×3 + 3×3 d2, sum']:.2f}×, "
            f"plain SK / sum: {result['SK, plain autograd'] / result['3×3 + 3×3 d2, sum']:.2f}×"
        )


if __name__ == "__main__":
    main()
