"""String enums given as text (flags, YAML, keyword arguments): one parser, one error message."""

from __future__ import annotations

import enum
from typing import TypeVar

from sknet.errors import ConfigError

E = TypeVar("E", bound=enum.Enum)


def parse_enum(cls: type[E], value: object, name: str) -> E:
    """`value` as a member of the string enum `cls` (case-insensitive); ConfigError listing the options."""
    if isinstance(value, cls):
        return value
    try:
        return cls(str(value).lower())
    except ValueError:
        options = ", ".join(repr(member.value) for member in cls)
        raise ConfigError(f"{name} must be one of {options}, got {value!r}") from None
