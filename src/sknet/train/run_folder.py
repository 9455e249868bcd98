"""The run folder: never silently overwritten, written by one process at a time.

- A folder that already holds a run (its config, checkpoint, weights, logs or summary) is refused unless
  the run is being resumed, or `overwrite` is asked for: then the old run's files are moved, not deleted,
  to a sibling folder ``<name>.replaced-<time>``.
- While a run writes to it, the folder is locked (``.lock``, an advisory ``flock``): a second process is
  refused with the first one's pid. The operating system drops the lock when its process ends, however
  it ends, so a crashed run never leaves the folder stuck.
- Temporary files of a checkpoint write that a killed process left behind are removed.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from sknet.errors import ConfigError
from sknet.weights import RUN_FILES

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; the overwrite check still holds
    fcntl = None

LOCK_NAME = ".lock"


def holds_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_FILES)


def is_run_file(path: Path) -> bool:
    """Whether `path` names one of a training run's own files (its config, checkpoints and their checksums,
    weights, logs, lock) in a folder that holds a run: no other command writes there (sknet.cli.outputs)."""
    name = path.name.removesuffix(".sha256")
    return (name in RUN_FILES or path.name == LOCK_NAME) and holds_run(path.parent)


def check_output(folder: Path, resuming_here: bool, overwrite: bool, config=None, own_data: bool = False) -> None:
    """Refuse (before any work) to start a new run in a folder that holds one, unless asked to replace it;
    in any case, to write a run among the data `config` reads (unless the caller gives its `own_data`), or
    to move aside with `overwrite` the ``config.init_weights`` it starts from."""
    from sknet.data.datasets import data_folders

    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"output {folder} exists and is not a folder")
    dataset, data_dir = (config.dataset, config.data_dir) if config is not None and not own_data else ("", None)
    data = [f for split in ("train", "test") for f in data_folders(dataset, data_dir, split)]
    init_weights = getattr(config, "init_weights", None)
    inside = next((d for d in data if folder.resolve().is_relative_to(d.resolve())), None)
    if inside is not None:
        raise ConfigError(f"output {folder} is inside {inside}, the data this run reads; choose another --output")
    moved = overwrite and not resuming_here and holds_run(folder)
    if moved and init_weights and Path(init_weights).resolve().is_relative_to(folder.resolve()):
        raise ConfigError(
            f"--init-weights {init_weights} is inside {folder}, which --overwrite moves aside before the run reads "
            f"it: give its new place (copy it out first) or choose another --output"
        )
    if resuming_here or overwrite or not holds_run(folder):
        return
    raise ConfigError(
        f"{folder} already holds a run: continue it with --resume {folder}, choose another --output, or pass "
        f"--overwrite to move the old run to {folder.name}.replaced-<time>/ first"
    )


class RunFolder:
    """The lock on an output folder, held from :meth:`claim` to :meth:`release`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = None
        self._made = False  # whether claim() created the folder (release() removes it again if left empty)

    def claim(self, overwrite_existing: bool) -> Path | None:
        """Lock the folder; with `overwrite_existing`, move a run found there aside (returns where to)."""
        self._made = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        for stale in self.folder.glob(".*.tmp"):  # a checkpoint write cut short by kill -9
            stale.unlink(missing_ok=True)
        if overwrite_existing and holds_run(self.folder):
            return self._move_aside()
        return None

    def _take_lock(self) -> None:
        if fcntl is None:
            return
        # Kept from the moment it is opened: a signal before the flock below still finds it in release().
        self._lock = handle = open(self.folder / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the run
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            self._lock = None  # another process's lock: never touched by release()
            raise ConfigError(
                f"another process (pid {owner}) is writing a run to {self.folder}; wait for it to end or choose "
                "another --output"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.folder.with_name(f"{self.folder.name}.replaced-{stamp}")
        index = 2
        while target.exists():
            target = self.folder.with_name(f"{self.folder.name}.replaced-{stamp}-{index}")
            index += 1
        target.mkdir()
        for entry in self.folder.iterdir():
            if entry.name != LOCK_NAME:
                shutil.move(str(entry), str(target / entry.name))
        return target

    def release(self) -> None:
        """Drop the lock. A start that failed before writing anything leaves no trace: the lock file goes,
        and the folder too when this run created it."""
        if self._lock is None:
            return
        try:
            if [p.name for p in self.folder.iterdir()] == [LOCK_NAME]:
                (self.folder / LOCK_NAME).unlink()  # still held: no other process is inside
                if self._made:
                    self.folder.rmdir()
        except OSError:
            pass  # tidying up is a courtesy; the lock itself is dropped below however this went
        self._lock.close()  # closing the descriptor drops the flock
        self._lock = None
