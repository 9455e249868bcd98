"""String enums given as text (flags, YAML, keyword arguments): one base, one parser, one error message."""

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


class TextEnum(str, enum.Enum):
    """A string enum an option is given as: ``Kind.parse(value)`` (case-insensitive) or ConfigError naming
    the option (``__option__``, default the class name in snake case) and the allowed values."""

    @classmethod
    def parse(cls: type[E], value: object) -> E:
        name = cls.__dict__.get("__option__") or "".join(
            f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(cls.__name__)
        )
        return parse_enum(cls, value, name)
