"""Jobs that heal: torchrun's restarts (``--max-restarts N``) continue the run instead of starting over.

When a worker dies (a lost node, an out-of-memory kill, SIGKILL), torchrun stops the other workers and
starts the whole group again, with ``TORCHELASTIC_RESTART_COUNT`` > 0 in their environment. The same
command line then finds the run folder it was writing: it resumes from its last checkpoint (exactly, as
``--resume`` does), or, when the first attempt died before any checkpoint, starts again and moves the
partial folder aside (nothing is deleted).
"""

from __future__ import annotations

import os
from pathlib import Path

from sknet.errors import ConfigError
from sknet.weights import previous_path

RESTART_COUNT = "TORCHELASTIC_RESTART_COUNT"


def restart_count() -> int:
    """How many times torchrun has restarted this group (0: the first attempt, or not under torchrun)."""
    value = os.environ.get(RESTART_COUNT, "0")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {RESTART_COUNT}={value!r} is not an integer") from None


def checkpoint_to_continue(output: str | Path) -> Path | None:
    """The checkpoint a restarted group continues from: its run folder's (or the one kept before it), when
    torchrun restarted the group; None on a first attempt or when nothing was saved yet."""
    if restart_count() == 0:
        return None
    checkpoint = Path(output) / "checkpoint.pt"
    return checkpoint if checkpoint.is_file() or previous_path(checkpoint).is_file() else None
