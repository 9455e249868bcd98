"""`sknet bench`: SKNet-50 vs ResNeXt-50 (ours and timm's) and timm's SKNet-50, side by side."""

from __future__ import annotations

import argparse
import json
import sys

from sknet.bench import MIN_RESOLUTION
from sknet.cli.options import add_json_arg, checked
from sknet.data.config import MAX_INPUT_SIZE
from sknet.train.check import integer
from sknet.train.config import CHECKS, Precision


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="speed and memory against ResNeXt-50 and timm", description=__doc__)
    parser.add_argument("--mode", choices=("inference", "train", "both"), default="both", help="what to time")
    parser.add_argument(
        "--batch-size",
        type=checked(CHECKS["batch_size"], "--batch-size"),
        help="default: 8 for inference, 16 for training",
    )
    parser.add_argument(
        "--resolution",
        type=checked(integer(MIN_RESOLUTION, MAX_INPUT_SIZE), "--resolution"),
        default=224,
        help="input side in pixels (default: 224)",
    )
    parser.add_argument(
        "--dtype", choices=[p.value for p in Precision], default="fp32", help="fp32, or autocast to bf16 / fp16"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument(
        "--repeats",
        type=checked(integer(1, None), "--repeats"),
        default=7,
        help="timed rounds (median reported; default: 7)",
    )
    parser.add_argument(
        "--warmup", type=checked(integer(0, None), "--warmup"), default=2, help="untimed rounds first (default: 2)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile every model")
    parser.add_argument("--no-timm", action="store_true", help="skip timm's models even if installed")
    parser.add_argument(
        "--formats",
        nargs="+",
        default=["nchw", "channels_last"],
        choices=("nchw", "channels_last"),
        help="memory layouts to try",
    )
    add_json_arg(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from sknet.bench import default_candidates, format_results, ratios, run_bench, timm_available

    modes = ["inference", "train"] if args.mode == "both" else [args.mode]
    report = {"threads": torch.get_num_threads(), "torch": torch.__version__, "device": args.device, "runs": []}
    if not args.no_timm and not timm_available():
        print("timm is not installed (pip install 'sknet[bench]'): comparing with our ResNeXt-50 only", file=sys.stderr)
    for mode in modes:
        batch = args.batch_size if args.batch_size is not None else (8 if mode == "inference" else 16)
        cands = default_candidates(with_timm=not args.no_timm, fused=mode == "inference")
        results = run_bench(
            mode,
            batch,
            args.resolution,
            args.dtype,
            args.device,
            args.repeats,
            args.warmup,
            args.compile,
            tuple(args.formats),
            cands,
            progress=None if args.json else lambda m: print("   ", m, file=sys.stderr, flush=True),
        )
        report["runs"].append(
            {
                "mode": mode,
                "batch": batch,
                "resolution": args.resolution,
                "dtype": args.dtype,
                "compile": args.compile,
                "results": [r.to_dict() for r in results],
                "ratios": ratios(results),
            }
        )
        if not args.json:
            print(
                f"{mode}: batch {batch}, {args.resolution}×{args.resolution}, {args.dtype}, device {args.device}, "
                f"{report['threads']} threads, torch {report['torch']}{', compiled' if args.compile else ''}"
            )
            print(format_results(results), flush=True)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0
