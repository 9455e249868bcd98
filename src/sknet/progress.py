"""Progress of long loops: a tqdm bar on a terminal, plain lines where output goes to a log.

Mode "auto" shows a bar when stderr is a terminal and otherwise (batch jobs, output redirected to a
file) prints a plain line at most every :data:`PLAIN_EVERY_S` seconds, the first one after
:data:`FIRST_PLAIN_S` seconds (a log says early what runs and when it ends), so logs show progress without
carriage-return noise. "always" forces the bar, "never" shows nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from sknet.errors import ConfigError

PROGRESS_MODES = ("auto", "always", "never")
PLAIN_EVERY_S = 60.0  # seconds between plain lines (mode "auto" without a terminal)
FIRST_PLAIN_S = 5.0  # seconds before the first one: enough steps to estimate the time left
_POSTFIX_EVERY = 10  # the bar's statistics are refreshed every this many updates


def check_progress_mode(mode: str) -> str:
    if mode not in PROGRESS_MODES:
        raise ConfigError(f"progress must be 'auto', 'always' or 'never', got {mode!r}")
    return mode


class Progress:
    """Counts `total` steps; `update(postfix=...)` after each one.

    Args:
        total: number of steps (the bar's 100%); None when unknown.
        desc: what runs, e.g. "epoch 2/8" (starts every plain line).
        mode: "auto", "always" or "never" (see the module docstring).
        initial: steps already done (a resumed epoch).
        unit: name of a step in the output.
        enabled: False on processes that must stay silent (non-zero DDP ranks).
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        mode: str = "auto",
        initial: int = 0,
        unit: str = "batch",
        enabled: bool = True,
    ) -> None:
        from tqdm import tqdm

        check_progress_mode(mode)
        terminal = sys.stderr.isatty()
        self.show_bar = enabled and (mode == "always" or (mode == "auto" and terminal))
        self.show_lines = enabled and mode == "auto" and not terminal
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self.start = initial
        self.t0 = self.last_line = time.perf_counter()
        self.lines = 0  # plain lines printed
        self.out = sys.stdout  # as made: a caller may silence a library's own prints around the loop
        self.bar = tqdm(
            total=total, initial=initial, desc=desc, unit=unit, disable=not self.show_bar, dynamic_ncols=True
        )

    def update(self, n: int = 1, postfix: Callable[[], dict[str, str]] | None = None) -> None:
        """Advance by `n` steps; `postfix` gives the statistics to show (called only when they are shown)."""
        self.n += n
        if self.show_bar:
            if postfix is not None and (self.n % _POSTFIX_EVERY == 0 or self.n == self.total):
                self.bar.set_postfix(postfix(), refresh=False)
            self.bar.update(n)
        now = time.perf_counter()
        wait = PLAIN_EVERY_S if self.lines else min(FIRST_PLAIN_S, PLAIN_EVERY_S)
        if self.show_lines and now - self.last_line >= wait and (self.total is None or self.n < self.total):
            self.lines += 1
            self.last_line = now
            stats = "".join(f", {k} {v}" for k, v in (postfix() if postfix else {}).items())
            if self.total is None:
                print(f"{self.desc}: {self.unit} {self.n}{stats}", file=self.out, flush=True)
                return
            left = (now - self.t0) / max(self.n - self.start, 1) * (self.total - self.n)
            print(
                f"{self.desc}: {self.unit} {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f}%)"
                f"{stats}, ends in {left:.0f} s",
                file=self.out,
                flush=True,
            )

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
