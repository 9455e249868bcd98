"""The one place sknet launches a Triton kernel, and a way to record launches instead of running them.

Every launcher in :mod:`sknet.kernels` calls :func:`launch`. Inside :func:`recording`, launches are
collected (kernel, grid, arguments, compile-time options) and nothing runs: that is how
:mod:`sknet.kernels.specializations` learns, from the launchers themselves, which specializations of which
kernels the operators can ask for, so they can be compiled for real GPU targets on a machine without one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Launch:
    """One kernel launch as the launcher asked for it: `args` are the positional kernel arguments (tensors
    and Python scalars), `options` the keyword ones (constexprs and launch options such as num_warps)."""

    kernel: Any  # a triton JITFunction
    grid: tuple[int, ...]
    args: tuple[Any, ...]
    options: dict[str, Any]

    @property
    def name(self) -> str:
        return self.kernel.__name__


_recorded: list[Launch] | None = None


def launch(kernel: Any, grid: tuple[int, ...], *args: Any, **options: Any) -> None:
    """Run `kernel` over `grid` (or record the launch, inside :func:`recording`)."""
    if _recorded is not None:
        _recorded.append(Launch(kernel, tuple(grid), args, options))
        return
    kernel[grid](*args, **options)


@contextlib.contextmanager
def recording() -> Iterator[list[Launch]]:
    """Collect the launches made inside the block instead of running them (outputs stay uninitialised)."""
    global _recorded
    previous, _recorded = _recorded, []
    try:
        yield _recorded
    finally:
        _recorded = previous
