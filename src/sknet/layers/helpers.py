"""Small sizing rules shared by layers and model families."""

from __future__ import annotations


def make_divisible(value: float, divisor: int = 8) -> int:
    """`value` rounded to the nearest multiple of `divisor`, at least `divisor` and never more than 10% below
    `value` (MobileNet's channel rule; timm's ``make_divisible`` with its default round limit 0.9)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded
