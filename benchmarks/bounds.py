"""How fast can any two-path SK-ResNeXt-50 be on this machine? Side-by-side ratios, one process.

Two grouped 3×3 paths cost what they cost whatever the attention does; this measures them without any
attention (the paths' outputs simply added, Table 7's "SK ✗" rows) next to ResNeXt-50 and SKNet-50:

    python benchmarks/bounds.py                  # inference (BN folded, batch 8) and training (batch 16)
    python benchmarks/bounds.py --mode train --repeats 7
    python benchmarks/bounds.py --mode traffic   # the fused SK tail's memory traffic floor (a model)

If "3x3 + 3x3 d2, sum" is already below a speed goal, no select step can reach it: the gap is the second
convolution path.
"""

from __future__ import annotations

import argparse

import torch

from sknet.bench import Candidate, run_bench
from sknet.bn_folding import fuse_for_inference
from sknet.layers import SKConv2d
from sknet.models import create_model


def candidates(fused: bool) -> list[Candidate]:
    def make(name: str, **options: object):
        def build():
            model = create_model(name, **options)
            return fuse_for_inference(model) if fused else model

        return build

    return [
        Candidate("resnext50", make("resnext50"), "baseline", fused),
        Candidate("3x3 + 3x3, sum (no attention)", make("sknet50", branches="3d1,3d1", aggregation="sum"), "sk", fused),
        Candidate("3x3 + 3x3 d2, sum (no attention)", make("sknet50_k3k5_sum"), "sk", fused),
        Candidate("sknet50", make("sknet50"), "sk", fused),
    ]


def sk_tail_shapes(name: str, batch: int, size: int, dtype: torch.dtype):
    """The path maps (N, C, H, W, M) of every SK layer of model `name` at batch × size², from one CPU forward
    at batch 1 (shapes scale with the batch)."""
    from sknet.kernels.traffic import TailShape

    model, shapes = create_model(name).eval(), []

    def record(module, inputs, output):
        _, c, h, w = output.shape
        shapes.append(TailShape(batch, c, h, w, module.num_paths, dtype))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, SKConv2d)]
    with torch.no_grad():
        model(torch.zeros(1, model.data_config.in_chans, size, size))
    for hook in hooks:
        hook.remove()
    return shapes


def traffic_floor(name: str = "sknet50", batch: int = 128, size: int = 224) -> dict[str, tuple[int, int, float]]:
    """kernel → (bytes read, bytes written, seconds at the H100's bandwidth) per training step, bf16 maps,
    channels_last: the model of sknet.kernels.traffic over the SK layers of `name`."""
    from sknet.kernels.traffic import floor_seconds, step_traffic

    traffic = step_traffic(sk_tail_shapes(name, batch, size, torch.bfloat16), channels_last=True)
    floors = floor_seconds(traffic)
    return {k: (r, w, floors[k]) for k, (r, w) in traffic.items()}


def print_traffic(name: str = "sknet50", batch: int = 128, size: int = 224, measured: dict | None = None) -> float:
    """Print the traffic model's table (`measured`, kernel → seconds per step, adds a measured column); return
    the floor in seconds."""
    from sknet.kernels.traffic import H100_BANDWIDTH

    rows = traffic_floor(name, batch, size)
    print(
        f"MODEL (not a measurement): fused SK tail of {name}, one training step, batch {batch}, {size}², bf16 maps, "
        f"channels_last, every map read from DRAM, at the H100's {H100_BANDWIDTH / 1e12:.2f} TB/s"
    )
    print(
        f"  {'kernel':8s} {'read MB':>9s} {'written MB':>11s} {'floor ms':>9s}" + ("  measured ms" if measured else "")
    )
    for kernel, (r, w, seconds) in rows.items():
        extra = f"  {measured[kernel] * 1e3:11.3f}" if measured and kernel in measured else ""
        print(f"  {kernel:8s} {r / 1e6:9.1f} {w / 1e6:11.1f} {seconds * 1e3:9.3f}{extra}")
    total_r, total_w = sum(v[0] for v in rows.values()), sum(v[1] for v in rows.values())
    total = sum(v[2] for v in rows.values())
    extra = f"  {sum(measured.values()) * 1e3:11.3f}" if measured else ""
    print(f"  {'total':8s} {total_r / 1e6:9.1f} {total_w / 1e6:11.1f} {total * 1e3:9.3f}{extra}")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("inference", "train", "both", "traffic"), default="both")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=224)
    args = parser.parse_args()
    if args.mode == "traffic":
        print_traffic(size=args.resolution)
        return
    for mode in ("inference", "train") if args.mode == "both" else (args.mode,):
        batch = 8 if mode == "inference" else 16
        results = run_bench(
            mode, batch, args.resolution, repeats=args.repeats, warmup=1, candidates=candidates(mode == "inference")
        )
        base = max(r.images_per_s for r in results if r.role == "baseline")
        print(
            f"{mode}, batch {batch}, {args.resolution}×{args.resolution}"
            + (", BN folded" if mode == "inference" else "")
        )
        for r in results:
            print(f"  {r.label:34s} {r.memory_format:14s} {r.images_per_s:7.2f} images/s  {r.images_per_s / base:.3f}×")


if __name__ == "__main__":
    main()
