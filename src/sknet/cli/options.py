"""Argument helpers shared by subcommands: numeric options checked where they are parsed, model overrides
from flags, the options every command that runs a model over data shares."""

from __future__ import annotations

import argparse
import ast

from sknet.errors import ConfigError
from sknet.layers.branches import Aggregation
from sknet.train.check import Check


def checked(check: Check, option: str):
    """An argparse type for a numeric option: the text read as the check's kind (argparse's own "invalid
    int value: 'x'" when it is not one), then `check` (its range; numbers must be finite), so that a bad
    value is one line naming the option, exit 2, when the command line is parsed, before anything is read.
    The parser carries its `check` (tests/cli/test_options.py finds every numeric option by it)."""

    def parse(text: str):
        value = check.kind(text)  # ValueError: argparse says "invalid int value" (it reads __name__)
        try:
            return check.apply(option, value)
        except ConfigError as err:  # "--x must be …, got …": argparse adds "argument --x: " before it
            raise argparse.ArgumentTypeError(str(err).removeprefix(f"{option} ")) from None

    parse.__name__ = check.kind.__name__
    parse.check = check
    return parse


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
    """The options every command that runs a model over data shares, with one help text each; their values
    pass the checks of the training options of the same names (sknet.train.config)."""
    from sknet.train.config import CHECKS

    parser.add_argument(
        "--batch-size",
        type=checked(CHECKS["batch_size"], "--batch-size"),
        default=batch_size,
        help=f"images per batch (default: {batch_size})",
    )
    if workers:
        from sknet.data.loader import MAX_DEFAULT_WORKERS, default_workers

        parser.add_argument(
            "--workers",
            type=checked(CHECKS["workers"], "--workers"),
            default=default_workers(),
            help="processes decoding folder images (0: in this process; default: the cores available, "
            f"≤ {MAX_DEFAULT_WORKERS})",
        )
    parser.add_argument(
        "--device", default=device, help=f"auto (CUDA if present, else CPU), cpu, cuda or cuda:N (default: {device})"
    )


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
