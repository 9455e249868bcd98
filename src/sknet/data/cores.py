"""The CPU cores this process may run on: what loader processes, scans and threads are sized by."""

from __future__ import annotations

import os


def available_cores() -> int:
    """The cores of this process's CPU affinity (which containers, taskset and SLURM set; the machine's
    count where the platform has no affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
