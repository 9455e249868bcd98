"""Exceptions raised by sknet, and the exit status of each kind on the command line.

Every error a user can cause (bad configuration, wrong input, missing or corrupt files) is one of these,
with a message that names the problem; the command line prints that message on one line and exits with
the error's `exit_code` (documented in docs/guarantees.md, "Exit codes"):

    0 success · 1 a bug (traceback) · 2 usage or configuration · 3 data · 4 checkpoint or weights file ·
    5 training diverged · 6 storage (disk full, read-only, I/O) · 75 interrupted, resumable checkpoint saved ·
    130 interrupted, nothing to resume
"""

from __future__ import annotations

import errno
import re


class SKNetError(Exception):
    """Base class of all errors raised on purpose by sknet."""

    exit_code = 2

    def __init__(self, *args: object) -> None:
        # A DataLoader worker's error is raised again in the main process as type(err)("Caught ... in
        # DataLoader worker process N.\nOriginal Traceback ..."): keep the worker's own message, one line.
        if len(args) == 1 and isinstance(args[0], str) and args[0].startswith("Caught "):
            trace = args[0].partition("\nOriginal Traceback")[2]
            marker = f"{type(self).__module__}.{type(self).__qualname__}: "
            if marker in trace:
                args = (trace.rsplit(marker, 1)[1].rstrip("\n"),)
        super().__init__(*args)


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


def one_line(value: object) -> str:
    """`value` as text that stays on one line: control characters (newlines, tabs, escapes) of untrusted
    strings — file names, class names, metadata values, messages of other libraries — are written as
    Python escapes (``\\n``), so a message quoting them is still one line. Other characters are kept."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def clip(value: object, limit: int = 160) -> str:
    """`value` on one line (:func:`one_line`), cut at a word boundary to about `limit` characters with "…"."""
    text = one_line(value)
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(" ,;:") + "…"


def output_folder(path: object, option: str = "--out") -> None:
    """Refuse an output file whose folder does not exist (StorageError, exit 6), before any work."""
    from pathlib import Path

    parent = Path(str(path)).parent
    if not parent.is_dir():
        raise StorageError(f"cannot write {option} {one_line(path)}: the folder {one_line(parent)} does not exist")


def plural(count: int, noun: str) -> str:
    """'1 epoch', '2 epochs' (regular English plurals only)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def storage_error(err: OSError, what: str) -> StorageError | OSError:
    """A StorageError naming `what` was being written, for a storage failure; other errors unchanged."""
    if err.errno in STORAGE_ERRNOS:
        return StorageError(f"{err.strerror or err} while writing {what}")
    return err


def out_of_memory(err: BaseException) -> str | None:
    """'out of memory: … could not be allocated' when `err` is an allocation failure (Python's MemoryError,
    torch's CPU allocator or CUDA's OutOfMemoryError: their own texts span lines, with C++ sources), else None."""
    text = str(err)
    if isinstance(err, MemoryError):
        return "out of memory"
    if not isinstance(err, RuntimeError):
        return None
    if type(err).__name__ != "OutOfMemoryError" and "can't allocate memory" not in text and "out of memory" not in text:
        return None
    found = re.search(r"tried to allocate (\d+) bytes", text, re.IGNORECASE)
    if found:
        return f"out of memory: {int(found[1]) / 1e9:.1f} GB could not be allocated"
    found = re.search(r"tried to allocate ([\d.]+ [KMGTP]?i?B)", text, re.IGNORECASE)
    if found:
        return f"out of memory: {found[1]} could not be allocated"
    return f"out of memory: {clip(text.strip().splitlines()[0] if text.strip() else type(err).__name__)}"
