"""SIGINT (Ctrl-C) and SIGTERM (what SLURM and Kubernetes send before a kill) during training.

The first signal only raises a flag: the trainer finishes the step it is in, saves a checkpoint at that
consistent point and stops (a signal mid-forward would otherwise leave BatchNorm statistics updated by a
batch that resuming trains again). A second Ctrl-C stops at once without saving; the last checkpoint is
kept. Handlers are installed only while training, and only in the main thread (Python's rule).
"""

from __future__ import annotations

import signal
import sys
import threading


class StopSignals:
    """Context manager: `requested` is the name of the first SIGINT/SIGTERM received, or None."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce: bool = True) -> None:
        self.requested: str | None = None
        self.announce = announce
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def agreed(self, dist, read_point: bool) -> bool:
        """Whether to stop now. One process: its own flag, at every step (free). Under torchrun: every rank
        must stop at the same step, so the flags are summed over ranks, at read points only (a sync)."""
        local = self.requested is not None
        if not dist.enabled:
            return local
        from sknet.train.distributed import all_reduce_sum

        return read_point and all_reduce_sum([float(local)], dist)[0] > 0

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # asked twice: stop now, without saving
            return
        self.requested = name
        if self.announce:
            print(
                f"sknet: {name} received: stopping after this step with a checkpoint (Ctrl-C again to stop "
                "at once without saving)",
                file=sys.stderr,
                flush=True,
            )
