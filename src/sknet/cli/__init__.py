"""The `sknet` command line: one subcommand per module, errors printed on one line."""

from sknet.cli.main import main

__all__ = ["main"]
