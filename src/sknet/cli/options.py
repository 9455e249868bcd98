"""Argument helpers shared by subcommands: model overrides from flags."""

from __future__ import annotations

import argparse
import ast

from sknet.errors import ConfigError


def add_model_override_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model options")
    group.add_argument("--branches", help="SK paths: kernel sizes '3,5' or kernel/dilation[/groups] '3d1,5d1g64'")
    group.add_argument("--aggregation", choices=("sk", "sum"), help="SK attention or plain sum of paths")
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
