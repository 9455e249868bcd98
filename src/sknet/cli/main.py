"""Entry point of `sknet`. A user error prints one line on stderr and exits with its kind's status (see
sknet.errors: 2 usage or configuration, 3 data, 4 checkpoint or weights, 5 diverged, 6 storage, 75
interrupted with a resumable checkpoint, 130 interrupted); `--debug` adds the traceback."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Sequence
from functools import partial
from typing import NoReturn

from sknet import __version__
from sknet.cli import (
    attention_cmd,
    bench_cmd,
    convert_cmd,
    eval_cmd,
    export_cmd,
    predict_cmd,
    profile_cmd,
    shards_cmd,
    train_cmd,
)
from sknet.errors import (
    STORAGE_ERRNOS,
    ConfigError,
    SKNetError,
    StorageError,
    TrainingInterrupted,
    one_line,
    out_of_memory,
)

COMMANDS = [
    train_cmd,
    eval_cmd,
    predict_cmd,
    attention_cmd,
    profile_cmd,
    bench_cmd,
    convert_cmd,
    export_cmd,
    shards_cmd,
]

# Errors a user can cause from the command line; anything else is a bug and keeps its traceback.
USER_ERRORS = (SKNetError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (naming the command and the problem), not usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="sknet", description="Selective Kernel Networks in PyTorch.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"sknet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


class _Notices(logging.Handler):
    """The library's one-line notices (the "sknet" logger, e.g. a classifier re-initialised for fine-tuning)
    on stderr; the stream is looked up at each line, so that a redirected stderr gets them."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"sknet: {record.getMessage()}", file=sys.stderr)


def _terminated(signum, frame) -> NoReturn:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM outside training (loading, building, writing outputs) ends the command like Ctrl-C: one line,
    # status 130, not a silent 143. Training installs its own handlers (a checkpoint, then 75).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        return _main(argv)
    except KeyboardInterrupt as stop:  # during parsing, or a second Ctrl-C where the command does not catch it
        print(f"sknet: interrupted by {stop.args[0] if stop.args else 'SIGINT'}", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    notices = logging.getLogger("sknet")
    if not any(isinstance(h, _Notices) for h in notices.handlers):
        notices.addHandler(_Notices(logging.INFO))
        notices.setLevel(logging.INFO)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2, message already printed)
        return int(exit_.code or 0)
    formatwarning = warnings.formatwarning
    if not args.debug:  # --debug keeps Python's format: the category and the source line
        warnings.formatwarning = partial(_warning_line, args.command)  # also in forked loader workers
    try:
        return _run(args)
    finally:
        warnings.formatwarning = formatwarning


def _warning_line(command: str, message, category, filename, lineno, line=None) -> str:
    """A warning as the command's one line (Python's own format adds the category, file and source line)."""
    return f"sknet {command}: warning: {one_line(message)}\n"


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt as stop:
        how = stop.args[0] if stop.args and isinstance(stop.args[0], str) else "SIGINT"
        print(f"sknet {args.command}: interrupted by {how}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `sknet profile | head`: the reader left; not an error worth a traceback
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (MemoryError, RuntimeError) as err:  # a batch (or model) larger than the memory: not a bug
        reason = out_of_memory(err)
        if reason is None:
            raise
        if args.debug:
            traceback.print_exc()
        hint = "; a smaller --batch-size may fit" if getattr(args, "batch_size", None) else ""
        print(f"sknet {args.command}: error: {reason}{hint}", file=sys.stderr)
        return ConfigError.exit_code
    except (*USER_ERRORS, OSError) as err:
        storage = isinstance(err, OSError) and (isinstance(err, StorageError) or err.errno in STORAGE_ERRNOS)
        if not isinstance(err, USER_ERRORS) and not storage:
            raise  # an OSError that is neither the user's nor the storage's: a bug, with its traceback
        if args.debug:
            traceback.print_exc()
        message = str(err) or type(err).__name__
        if isinstance(err, OSError) and not isinstance(err, SKNetError) and err.filename is not None:
            message = f"{err.strerror or type(err).__name__}: {err.filename}"
        kind = "interrupted" if isinstance(err, TrainingInterrupted) else "error"
        # One line, whatever the message quotes (a file name, a class name, a metadata value may hold a
        # newline or a terminal escape): control characters are written as escapes.
        print(f"sknet {args.command}: {kind}: {one_line(message)}", file=sys.stderr)
        if storage:
            return StorageError.exit_code
        return getattr(err, "exit_code", 2)


if __name__ == "__main__":
    sys.exit(main())
