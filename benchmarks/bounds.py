"""How fast can any two-path SK-ResNeXt-50 be on this machine? Side-by-side ratios, one process.

Two grouped 3×3 paths cost what they cost whatever the attention does; this measures them without any
attention (the paths' outputs simply added, Table 7's "SK ✗" rows) next to ResNeXt-50 and SKNet-50:

    python benchmarks/bounds.py                  # inference (BN folded, batch 8) and training (batch 16)
    python benchmarks/bounds.py --mode train --repeats 7

If "3x3 + 3x3 d2, sum" is already below a speed goal, no select step can reach it: the gap is the second
convolution path.
"""

from __future__ import annotations

import argparse

from sknet.bench import Candidate, run_bench
from sknet.bn_folding import fuse_for_inference
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("inference", "train", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=224)
    args = parser.parse_args()
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
