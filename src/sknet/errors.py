"""Exceptions raised by sknet.

Every error a user can cause (bad configuration, wrong input, missing or corrupt files) is one of these,
with a message that names the problem; the command line prints that message on one line.
"""

from __future__ import annotations


class SKNetError(Exception):
    """Base class of all errors raised on purpose by sknet."""


class ConfigError(SKNetError, ValueError):
    """An invalid model, layer or training configuration (raised at construction time)."""


class InputShapeError(SKNetError, ValueError):
    """A tensor whose shape does not fit the module it is given to."""


class UnknownModelError(SKNetError, KeyError):
    """A model name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(SKNetError):
    """Missing, empty or unreadable data."""


class CheckpointError(SKNetError):
    """A checkpoint or weights file that is missing, corrupt, unsafe or made for another model."""
