"""The exit statuses the table of docs/guarantees.md ("Exit codes") documents are the ones the error classes
carry: every class's status is a row whose meaning names its kind, and every row is a class's status or one the
command line sets itself (0 success, 1 a bug's traceback, 130 interrupted outside training);
errors.py's summary lists the same."""

import re
from pathlib import Path

import sknet.cli.main  # noqa: F401 (every module that may define an error class is loaded)
import sknet.errors as errors
from sknet.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    SKNetError,
    StorageError,
    TrainingDiverged,
    TrainingInterrupted,
)

TABLE = Path(__file__).parents[1] / "docs" / "guarantees.md"
# The statuses sknet.cli.main sets without an error class.
OWN = {0: "success", 1: "a bug in sknet", 130: "interrupted outside training"}
# The word each kind's row must hold.
KIND = {
    ConfigError: "configuration",
    DataError: "data",
    CheckpointError: "checkpoint or weights file",
    TrainingDiverged: "training diverged",
    StorageError: "storage",
    TrainingInterrupted: "interrupted by SIGTERM/SIGINT",
}


def _table() -> dict[int, str]:
    rows = re.findall(r"^\s*\| (\d+) \| (.+?) \|\s*$", TABLE.read_text(), re.M)
    assert rows, "no exit-status table in docs/guarantees.md"
    return {int(status): meaning for status, meaning in rows}


def _classes() -> list[type]:
    found, todo = [], [SKNetError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def test_every_error_class_has_its_row_and_every_row_its_source():
    table, classes = _table(), _classes()
    assert len(classes) > len(KIND)  # ConfigError's relatives and CheckpointError's (e.g. WireError) too
    for cls in classes:
        assert cls.exit_code in table, f"{cls.__name__}: status {cls.exit_code} is not in docs/guarantees.md's table"
    assert set(table) == {cls.exit_code for cls in classes} | set(OWN)
    for status, meaning in OWN.items():
        assert meaning in table[status]
    for cls, word in KIND.items():
        assert word in table[cls.exit_code], (cls.__name__, table[cls.exit_code])
    for cls in classes:  # a subclass keeps the status of its kind
        kind = next((k for k in KIND if issubclass(cls, k)), None)
        assert kind is None or cls.exit_code == kind.exit_code, cls


def test_errors_py_summarises_the_same_statuses():
    summary = errors.__doc__.split('"Exit codes"):', 1)[1]
    listed = {int(n) for n in re.findall(r"(?:^|·)\s*(\d+) [a-z]", summary, re.M)}
    assert listed == set(_table()), summary
