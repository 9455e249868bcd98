"""The SK layer's options that are not sizes: its paths (:class:`Branch`, :func:`parse_branches`) and how they
are combined (:class:`Aggregation`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sknet.enums import TextEnum
from sknet.errors import ConfigError
from sknet.layers.checks import check_positive_int


class Aggregation(TextEnum):
    """How the paths are combined: SK attention (the paper) or a plain sum (the Table 7 baseline)."""

    SK = "sk"
    SUM = "sum"


@dataclass(frozen=True)
class Branch:
    """One SK path: a `kernel_size`×`kernel_size` conv with `dilation` and `groups` (None: the layer's).

    The paper's "5×5" path is ``Branch(3, 2)`` (a 3×3 with dilation 2, same receptive field); a true
    5×5 is ``Branch(5, 1)``.
    """

    kernel_size: int = 3
    dilation: int = 1
    groups: int | None = None

    def __post_init__(self) -> None:
        check_positive_int("branch kernel_size", self.kernel_size)
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"branch kernel_size must be odd (same padding), got {self.kernel_size}")
        check_positive_int("branch dilation", self.dilation)
        if self.groups is not None:
            check_positive_int("branch groups", self.groups)

    @property
    def receptive_field(self) -> int:
        """Side of the square the path sees: dilation·(k − 1) + 1."""
        return self.dilation * (self.kernel_size - 1) + 1

    @classmethod
    def from_kernel(cls, size: int) -> Branch:
        """The paper's convenience form: a k×k receptive field as a 3×3 with dilation (k − 1)/2."""
        check_positive_int("kernel size", size)
        if size % 2 == 0:
            raise ConfigError(f"kernel size must be odd, got {size}")
        return cls(1, 1) if size == 1 else cls(3, (size - 1) // 2)

    def __str__(self) -> str:
        text = f"{self.kernel_size}d{self.dilation}"
        return text if self.groups is None else f"{text}g{self.groups}"


BranchLike = int | Sequence[int] | Branch
_BRANCH_TOKEN = re.compile(r"^(\d+)(?:d(\d+))?(?:g(\d+))?$")


def parse_branches(spec: str | Iterable[BranchLike]) -> tuple[Branch, ...]:
    """Normalise a branch specification to a tuple of :class:`Branch`.

    Accepted forms, mixed freely:
      - ``5`` — receptive field 5 as the paper builds it: 3×3, dilation 2;
      - ``(k, d)`` or ``(k, d, groups)`` — an explicit kernel, e.g. ``(5, 1)`` is a true 5×5;
      - ``Branch(...)``;
      - a string: ``"3,5"`` (receptive fields) or ``"3d1,3d2"``, ``"3d1,5d1g64"`` (kernel, dilation, groups).
    """
    if isinstance(spec, str):
        tokens = [t.strip().lower() for t in spec.split(",") if t.strip()]
        items: list[BranchLike] = []
        for token in tokens:
            match = _BRANCH_TOKEN.match(token)
            if match is None:
                raise ConfigError(
                    f"cannot parse branch {token!r} in {spec!r}: use a kernel size like '5' "
                    "or kernel/dilation/groups like '3d2' or '5d1g64'"
                )
            k, d, g = match.groups()
            if d is None and g is None:
                items.append(int(k))
            else:
                items.append(Branch(int(k), int(d or 1), int(g) if g else None))
        spec = items
    if isinstance(spec, (int, Branch)):
        spec = [spec]
    try:
        raw = list(spec)
    except TypeError:
        raise ConfigError(
            f"branches must be a sequence of kernel sizes or (kernel, dilation) pairs, got {spec!r}"
        ) from None
    if not raw:
        raise ConfigError("branches is empty: an SK convolution needs at least one path")
    branches = []
    for item in raw:
        if isinstance(item, Branch):
            branches.append(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            branches.append(Branch.from_kernel(item))
        elif isinstance(item, Sequence) and not isinstance(item, str) and 2 <= len(item) <= 3:
            branches.append(Branch(*item))
        else:
            raise ConfigError(
                f"cannot read branch {item!r}: use a kernel size (int), (kernel, dilation) or "
                "(kernel, dilation, groups)"
            )
    return tuple(branches)
