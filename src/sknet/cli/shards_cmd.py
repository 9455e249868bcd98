"""`sknet shards DIR OUT`: WebDataset tar shards of an image folder, for `sknet train --dataset wds`."""

from __future__ import annotations

import argparse

from sknet.cli.options import checked
from sknet.cli.outputs import add_overwrite_arg, check_outputs
from sknet.train.check import integer
from sknet.train.config import CHECKS


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("shards", help="write WebDataset tar shards of an image folder", description=__doc__)
    parser.add_argument("data_dir", metavar="DIR", help="image folder: DIR/train/CLASS/*.jpg (and DIR/val/...)")
    parser.add_argument("output", metavar="OUT", help="folder for train-000000.tar, ..., val-..., info.json")
    parser.add_argument(
        "--shard-size",
        type=checked(integer(1, None), "--shard-size"),
        default=1000,
        help="samples per shard (default: 1000)",
    )
    parser.add_argument(
        "--seed",
        type=checked(CHECKS["seed"], "--seed"),
        default=0,
        help="seed of the training samples' order (default: 0)",
    )
    add_overwrite_arg(parser, "shards already in OUT")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sknet.data.shards import INFO, shard_files, split_folders, write_shards

    written = shard_files(args.output) or [Path(args.output) / INFO]  # all that exists of what it writes
    folders = split_folders(args.data_dir).values()
    check_outputs(written, "OUT", args.overwrite, folders=folders, makes_folder=True)
    info = write_shards(args.data_dir, args.output, args.shard_size, args.seed, args.overwrite)
    for name, shards in info["splits"].items():
        print(f"{name}: {sum(shards.values())} samples in {len(shards)} shard(s)")
    first = next(iter(info["splits"]["train"]))
    last = list(info["splits"]["train"])[-1]
    print(f"train with: sknet train --dataset wds --data-dir '{args.output}/train-{{{first[6:12]}..{last[6:12]}}}.tar'")
    return 0
