"""What a configuration value must be (a kind, an interval, choices), checked with one message format:
"NAME must be DESCRIPTION, got VALUE". Every training option declares its Check in sknet.train.config."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sknet.enums import parse_enum
from sknet.errors import ConfigError


@dataclass(frozen=True)
class Check:
    """What a configuration value must be: its kind, and for numbers an interval (bounds inclusive unless
    `open_low`/`open_high`); `optional`: None is allowed; `choices`: the allowed strings; `valid`: a test of
    the value's form (e.g. a policy's grammar), described by `form`."""

    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    optional: bool = False
    choices: tuple[str, ...] | None = None
    valid: Callable[[Any], bool] | None = None
    form: str | None = None

    def describe(self) -> str:
        if self.form is not None:
            text = self.form
        elif issubclass(self.kind, enum.Enum):
            text = "one of " + ", ".join(repr(m.value) for m in self.kind)
        elif self.choices:
            text = "one of " + ", ".join(map(repr, self.choices))
        else:
            text = {
                int: "an integer",
                float: "a finite number",
                bool: "true or false",
                str: "text",
                dict: "a mapping of names to values",
            }[self.kind]
            low, high = (_show(v) for v in (self.low, self.high))
            if self.low is not None and self.high is not None:
                left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
                text += f" in {left}{low}, {high}{right}"
            elif self.low is not None:
                text += f" {'>' if self.open_low else '≥'} {low}"
        return text + (" (or null)" if self.optional else "")

    def apply(self, name: str, value: Any) -> Any:
        """The value, normalised (enums parsed, integers as floats for number fields), or ConfigError."""
        if value is None and self.optional:
            return None
        if issubclass(self.kind, enum.Enum):
            return parse_enum(self.kind, value, name)
        ok_type = {
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, (int, float)) and not isinstance(value, bool),
            bool: isinstance(value, bool),
            str: isinstance(value, str),
            dict: isinstance(value, dict),
        }[self.kind]
        if ok_type and self.kind is float:
            value = float(value)
            ok_type = math.isfinite(value)
        if ok_type and self.choices is not None:
            ok_type = value in self.choices
        if ok_type and self.valid is not None:
            ok_type = self.valid(value)
        if ok_type and self.low is not None:
            ok_type = value > self.low if self.open_low else value >= self.low
        if ok_type and self.high is not None:
            ok_type = value < self.high if self.open_high else value <= self.high
        if not ok_type:
            raise ConfigError(f"{name} must be {self.describe()}, got {value!r}")
        if self.kind is dict:  # the structure too: text keys, plain values (a file can hold anything)
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ConfigError(f"{name} must have text keys, got {key!r}")
                if not _plain(item):
                    raise ConfigError(f"{name}[{key!r}] must be {PLAIN}, got {item!r}")
        return value


PLAIN = "a number, text, true/false, null or a list of them"


def _plain(value: Any) -> bool:
    """A value a model option may take: a finite number, text, a bool, None, or a list (tuple) of such."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (list, tuple)) and all(_plain(item) for item in value)


def _show(bound: float | None) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}" if bound is not None else ""


def number(low=None, high=None, **kw) -> Check:
    return Check(float, low, high, **kw)


def integer(low=None, high=None, **kw) -> Check:
    return Check(int, low, high, **kw)


def plain_value(value: object) -> object:
    """JSON's fallback for configuration values: enums as their values, tuples as lists, else text."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return str(value)
