"""`sknet profile`: parameters and multiply-accumulates (MACs) of models, next to the paper's figures."""

from __future__ import annotations

import argparse

from sknet.cli.options import add_model_override_args, model_overrides
from sknet.paper import PAPER
from sknet.profile import format_table, profile_model, to_json

DEFAULT_MODELS = ("resnext50", "senet50", "sknet50", "resnext101", "senet101", "sknet101")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("profile", help="parameters and MACs next to the paper's figures", description=__doc__)
    parser.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help=f"registered model names (default: {' '.join(DEFAULT_MODELS)})",
    )
    parser.add_argument("--resolution", type=int, default=None, help="input side (default: model's native)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_model_override_args(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    names = args.models or list(DEFAULT_MODELS)
    overrides = model_overrides(args)
    rows = [profile_model(name, args.resolution, overrides) for name in names]
    if args.json:
        print(to_json(rows))
    else:
        print(format_table(rows))
        if any(r.paper_params is not None for r in rows):
            print(
                "paper: Table 2 of Li et al. (params as printed, MACs = the paper's 'GFLOPs'); "
                f"exact released counts: {', '.join(f'{k} {v:,}' for k, v in _exact().items())}"
            )
    return 0


def _exact() -> dict[str, int]:
    from sknet.paper import EXACT_PARAMS

    return {k: v for k, v in EXACT_PARAMS.items() if k in PAPER}
