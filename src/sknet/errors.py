"""Exceptions raised by sknet, and the exit status of each kind on the command line.

Every error a user can cause (bad configuration, wrong input, missing or corrupt files) is one of these,
with a message that names the problem; the command line prints that message on one line and exits with
the error's `exit_code` (documented in the README, "Exit codes"):

    0 success · 1 a bug (traceback) · 2 usage or configuration · 3 data · 4 checkpoint or weights file ·
    5 training diverged · 6 storage (disk full, read-only, I/O) · 75 interrupted, resumable checkpoint saved ·
    130 interrupted, nothing to resume
"""

from __future__ import annotations

import errno


class SKNetError(Exception):
    """Base class of all errors raised on purpose by sknet."""

    exit_code = 2


class ConfigError(SKNetError, ValueError):
    """An invalid model, layer or training configuration (raised at construction time)."""


class InputShapeError(SKNetError, ValueError):
    """A tensor whose shape does not fit the module it is given to."""


class UnknownModelError(SKNetError, KeyError):
    """A model name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(SKNetError):
    """Missing, empty or unreadable data, or data that does not fit the model."""

    exit_code = 3


class CheckpointError(SKNetError):
    """A checkpoint or weights file that is missing, corrupt, unsafe or made for another model."""

    exit_code = 4


class TrainingDiverged(SKNetError):
    """The loss became NaN or infinite; no update was applied from it."""

    exit_code = 5


class StorageError(SKNetError, OSError):
    """Writing results failed (disk full, read-only or unreachable storage); what was saved before is kept."""

    exit_code = 6


class TrainingInterrupted(SKNetError):
    """SIGINT or SIGTERM during training; a resumable checkpoint was written."""

    exit_code = 75  # EX_TEMPFAIL: try again (resume)


# OSError numbers that mean "the storage failed", not "you named the wrong file".
STORAGE_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EIO", "EFBIG") if hasattr(errno, name)
)


def storage_error(err: OSError, what: str) -> StorageError | OSError:
    """A StorageError naming `what` was being written, for a storage failure; other errors unchanged."""
    if err.errno in STORAGE_ERRNOS:
        return StorageError(f"{err.strerror or err} while writing {what}")
    return err
