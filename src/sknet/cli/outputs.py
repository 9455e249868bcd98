"""What a command may write, checked before any work: never over a file it reads (whatever the flags: the
input would be lost), never among the data it reads, never over a training run's files (`sknet train
--resume` and `--overwrite` are the ways to change those), and an output that exists already only with
`--overwrite`. A refusal is one line naming the file, exit 2 (usage); a folder that does not exist is
storage's, exit 6 (:func:`sknet.errors.output_folder`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path

from sknet.errors import ConfigError, one_line, output_folder
from sknet.train.run_folder import is_run_file


def add_overwrite_arg(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what} if it exists (default: refuse)")


def same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` are one file: the same path once links are resolved, or one inode (hard links)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist: not the same file
        return False


def inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def check_outputs(
    outputs: Iterable[str | Path],
    option: str,
    overwrite: bool,
    reads: Iterable[str | Path | None] = (),
    folders: Iterable[str | Path] = (),
    makes_folder: bool = False,
) -> None:
    """Refuse (ConfigError) to write `outputs` (the files a command writes, named by `option`) over a file
    in `reads` (the files it reads; None: none given), inside one of `folders` (data it reads), over a
    training run's files, over a folder, or, without `overwrite`, over files that exist (all of them named
    at once). StorageError when an output's folder does not exist, unless the command `makes_folder`."""
    outputs = [Path(p) for p in outputs]
    reads = [Path(p) for p in reads if p is not None]
    existing = []
    for out in outputs:
        if not makes_folder:
            output_folder(out, option)
        elif out.parent.exists() and not out.parent.is_dir():
            raise ConfigError(f"{option} {one_line(out.parent)} exists and is not a folder")
        read = next((r for r in reads if same_file(out, r)), None)
        if read is not None:
            raise ConfigError(
                f"{option} {one_line(out)} is {one_line(read)}, which this command reads: writing it would destroy "
                f"its input; choose another {option}"
            )
        folder = next((Path(f) for f in folders if inside(out, Path(f))), None)
        if folder is not None:
            raise ConfigError(
                f"{option} {one_line(out)} is inside {one_line(folder)}, the data this command reads; choose "
                f"another {option}"
            )
        if is_run_file(out):
            raise ConfigError(
                f"{option} {one_line(out)} is a file of the training run in {one_line(out.parent)}; choose another "
                f"{option} (a run's files change only by sknet train)"
            )
        if out.is_dir():
            raise ConfigError(f"{option} {one_line(out)} is a folder; name the file to write")
        if out.exists():
            existing.append(out)
    if existing and not overwrite:
        names = ", ".join(one_line(p) for p in existing[:3]) + (
            f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        )
        verb = "exists" if len(existing) == 1 else "exist"
        raise ConfigError(f"{option}: {names} {verb} already; pass --overwrite to replace, or choose another {option}")
