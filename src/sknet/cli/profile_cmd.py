"""`sknet profile`: parameters and multiply-accumulates (MACs) of models, next to the paper's figures."""

from __future__ import annotations

import argparse

from sknet.cli.options import add_model_override_args, checked, model_overrides
from sknet.data.config import MAX_INPUT_SIZE
from sknet.errors import ConfigError
from sknet.paper import PAPER
from sknet.profile import format_table, profile_model, to_json
from sknet.train.check import integer

DEFAULT_MODELS = ("resnext50", "senet50", "sknet50", "resnext101", "senet101", "sknet101")
TABLES = {
    "imagenet": DEFAULT_MODELS,
    "cifar": ("resnext29_16x32d", "resnext29_8x64d", "resnext29_16x64d", "senet29", "sknet29"),
    "lightweight": (
        "shufflenetv2_050",
        "shufflenetv2_050_se",
        "shufflenetv2_050_sk",
        "shufflenetv2_100",
        "shufflenetv2_100_se",
        "shufflenetv2_100_sk",
        "mobilenetv2_100",
        "mobilenetv2_100_se",
        "mobilenetv2_100_sk",
    ),
    "ablation": (
        "sknet50_k3",
        "sknet50_k5",
        "sknet50_k7",
        "sknet50_k3k5_sum",
        "sknet50",
        "sknet50_k3k7_sum",
        "sknet50_k3k7",
        "sknet50_k5k7_sum",
        "sknet50_k5k7",
        "sknet50_k3k5k7_sum",
        "sknet50_k3k5k7",
        "sknet50_d3",
        "sknet50_k5g64",
        "sknet50_k7g128",
    ),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("profile", help="parameters and MACs next to the paper's figures", description=__doc__)
    parser.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help=f"registered model names (default: {' '.join(DEFAULT_MODELS)})",
    )
    parser.add_argument(
        "--table",
        choices=tuple(TABLES),
        help="the rows of one of the paper's tables (Table 2, 5, 4 + MobileNetV2, 6 + 7), with its error rates",
    )
    parser.add_argument(
        "--resolution",
        type=checked(integer(1, MAX_INPUT_SIZE), "--resolution"),
        default=None,
        help="input side (default: model's native)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_model_override_args(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.table and args.models:
        raise ConfigError("give either model names or --table, not both")
    names = list(TABLES[args.table]) if args.table else args.models or list(DEFAULT_MODELS)
    overrides = model_overrides(args)
    rows = [profile_model(name, args.resolution, overrides) for name in names]
    if args.json:
        print(to_json(rows))
    else:
        print(format_table(rows, errors=bool(args.table)))
        if args.table:
            print(TABLE_NOTES[args.table])
        elif any(r.paper_params is not None for r in rows):
            print(
                "paper: Table 2 of Li et al. (params as printed, MACs = the paper's 'GFLOPs'); "
                f"exact released counts: {', '.join(f'{k} {v:,}' for k, v in _exact().items())}"
            )
    return 0


def _exact() -> dict[str, int]:
    from sknet.paper import EXACT_PARAMS

    return {k: v for k, v in EXACT_PARAMS.items() if k in PAPER}


TABLE_NOTES = {
    "imagenet": "paper: Table 2 (top-1 error at 224; MACs = the paper's 'GFLOPs').",
    "cifar": (
        "paper: Table 5 (CIFAR-10 error; params at 10 classes, +92,250 at 100). [?] marks figures the reference is\n"
        "unsure of. SKNet-29's 27.7M matches no configuration: G=16 gives 37.5M, G=32 (ours) 28.3M (docs/models.md)."
    ),
    "lightweight": (
        "paper: Table 4 (ImageNet top-1 error, MFLOPs = MACs). [?]: uncertain in the reference; only the 1.0x\n"
        "+SE/+SK MFLOPs are single-source. MobileNetV2 rows go beyond the paper (no figures)."
    ),
    "ablation": (
        "paper: Tables 6 and 7 (top-1 error); rows without figures are not in the reference. k3/k5/k7 = 3x3 with\n"
        "dilation 1/2/3; '_sum' = paths added without attention; sknet50 is the K3+K5 SK row."
    ),
}
