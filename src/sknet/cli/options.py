"""Argument helpers shared by subcommands: model overrides from flags."""

from __future__ import annotations

import argparse
import ast

from sknet.errors import ConfigError
from sknet.layers.branches import Aggregation


def add_model_override_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model options")
    group.add_argument("--branches", help="SK paths: kernel sizes '3,5' or kernel/dilation[/groups] '3d1,5d1g64'")
    group.add_argument(
        "--aggregation", choices=[a.value for a in Aggregation], help="SK attention or plain sum of paths"
    )
    group.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other builder option, e.g. --set drop_rate=0.2 --set stem_pool=caffe (repeatable)",
    )


def parse_value(text: str) -> object:
    """A Python literal when it is one (3, 0.2, True, (2, 2)), else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def model_overrides(args: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = parse_value(value.strip())
    if args.branches is not None:
        overrides["branches"] = args.branches
    if args.aggregation is not None:
        overrides["aggregation"] = args.aggregation
    return overrides


def add_run_args(parser: argparse.ArgumentParser, batch_size: int, device: str = "auto", workers: bool = True) -> None:
    """The options every command that runs a model over data shares, with one help text each."""
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"images per batch (default: {batch_size})")
    if workers:
        from sknet.data.pipeline import MAX_DEFAULT_WORKERS, default_workers

        parser.add_argument(
            "--workers",
            type=int,
            default=default_workers(),
            help="processes decoding folder images (0: in this process; default: the cores available, "
            f"≤ {MAX_DEFAULT_WORKERS})",
        )
    parser.add_argument(
        "--device", default=device, help=f"auto (CUDA if present, else CPU), cpu, cuda or cuda:N (default: {device})"
    )


def check_run_args(args: argparse.Namespace) -> None:
    """The values of add_run_args' options, checked before anything is loaded."""
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    if getattr(args, "workers", 0) < 0:
        raise ConfigError(f"--workers must be ≥ 0, got {args.workers}")


def add_progress_arg(parser: argparse.ArgumentParser) -> None:
    from sknet.progress import PROGRESS_MODES

    parser.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="auto",
        help="auto: a bar on a terminal, otherwise a plain line a minute; always; never (default: auto)",
    )


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of text")
