"""ImageNet-style folder trees: DIR/{train,val}/CLASS/IMAGE, with unreadable images skipped or reported."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset, default_collate

from sknet.data.images import IMAGE_EXTENSIONS, image_channels, open_image
from sknet.data.order import epoch_order
from sknet.data.split import Split
from sknet.errors import DataError

VAL_NAMES = ("val", "validation", "test")


def find_split_dir(root: str | Path | None, split: Split) -> Path:
    """DIR/train for training; DIR/val (or validation, test) for evaluation; DIR itself if it holds classes."""
    if root is None:
        raise DataError(
            "the imagefolder dataset needs a data folder DIR (--data-dir on the command line) with "
            "DIR/train/CLASS/*.jpg and DIR/val/..."
        )
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"data directory {root} {what} (expected DIR/train/CLASS/*.jpg and DIR/val/...)")
    names = ("train",) if split is Split.TRAIN else VAL_NAMES
    for name in names:
        if (root / name).is_dir():
            return root / name
    other = VAL_NAMES if split is Split.TRAIN else ("train",)
    if any((root / name).is_dir() for name in other):  # a split tree with this split missing
        wanted = "train" if split is Split.TRAIN else "val (or validation, test)"
        raise DataError(f"{root} has no {wanted}/ folder: expected DIR/train/CLASS/*.jpg and DIR/val/CLASS/*.jpg")
    return root


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class _Walk:
    """Image files of the class folders of one root, each real file under one class only.

    Symbolic links are followed, except a link to a folder already walked (a loop, or two links to one
    place), to the root or one of its ancestors, or into another class's folder: those would repeat images
    or give them a second label. Such links are collected in `refused` (link, reason) and not entered.
    """

    def __init__(self, root: Path, classes: list[str]) -> None:
        self.root = os.path.realpath(root)
        self.class_dirs = {name: os.path.realpath(root / name) for name in classes}
        self.seen: set[str] = set()
        self.files: set[str] = set()
        self.refused: list[tuple[str, str]] = []

    def _refusal(self, real: str, name: str) -> str | None:
        if real in self.seen:
            return "a folder already walked"
        if _inside(self.root, real):
            return "the data root or a folder above it"
        other = next((c for c, d in self.class_dirs.items() if c != name and _inside(real, d)), None)
        return f"class {other!r}" if other is not None else None

    def images(self, folder: Path, name: str):
        """Image files below `folder` (class `name`), sorted per directory."""
        for current, dirs, files in os.walk(folder, followlinks=True):
            real = os.path.realpath(current)
            reason = self._refusal(real, name)
            if reason is not None:
                self.refused.append((current, reason))
                dirs[:] = []
                continue
            self.seen.add(real)
            dirs.sort()
            for file in sorted(files):
                if not file.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                path = os.path.join(current, file)
                real_file = os.path.realpath(path)
                reason = "a file already listed" if real_file in self.files else self._refusal(real_file, name)
                if reason is not None:
                    self.refused.append((path, reason))
                    continue
                self.files.add(real_file)
                yield path


def scan_classes(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, [(image path, class index)]) of DIR/CLASS/...; DataError when something is empty.

    Every real image file gets exactly one label: links that would repeat images or relabel them are
    skipped, with one warning naming them (see :class:`_Walk`)."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    walk = _Walk(root, classes)
    samples = [(path, index) for index, name in enumerate(classes) for path in walk.images(root / name, name)]
    if walk.refused:
        shown = "; ".join(f"{link} (→ {reason})" for link, reason in walk.refused[:3])
        more = f" and {len(walk.refused) - 3} more" if len(walk.refused) > 3 else ""
        warnings.warn(
            f"skipped {len(walk.refused)} symbolic link(s) in {root} that would repeat images or give them a "
            f"second label: {shown}{more}",
            stacklevel=2,
        )
    counts = {index for _, index in samples}
    if not classes or len(counts) < len(classes):
        raise DataError(_missing_images(root, classes, counts))
    _check_readable(root, classes, samples)
    return classes, samples


def _check_readable(root: Path, classes: list[str], samples: list[tuple[str, int]]) -> None:
    """DataError naming the classes of which no file is an image PIL can open (headers only: one file per
    class where the first one opens), which would otherwise train as classes without a single image."""
    files: dict[int, list[str]] = {}
    for path, index in samples:
        files.setdefault(index, []).append(path)
    unreadable = {}
    for index, paths in files.items():
        reasons = []
        for path in paths:
            try:
                image_channels(path)
                break
            except DataError as err:
                reasons.append(str(err))
        else:
            unreadable[classes[index]] = (len(paths), reasons[0])
    if unreadable:
        shown = "; ".join(
            f"{name!r} ({count} files, e.g. {reason})" for name, (count, reason) in list(unreadable.items())[:3]
        )
        raise DataError(
            f"no readable image in {len(unreadable)} of the {len(classes)} class folders of {root}: {shown}"
        )


def check_same_classes(train: tuple[str, ...] | list[str], test: tuple[str, ...] | list[str], where: str) -> None:
    """DataError naming how the test split's classes differ from the training split's (`where`: the data)."""
    if list(train) == list(test):
        return
    only_train, only_test = [c for c in train if c not in test], [c for c in test if c not in train]
    if not only_train and not only_test:
        raise DataError(f"the test classes of {where} are those of training in another order")
    parts = [f"only in training: {', '.join(only_train[:5])}" if only_train else "",
             f"only in test: {', '.join(only_test[:5])}" if only_test else ""]  # fmt: skip
    raise DataError(
        f"the test classes of {where} differ from its training classes ({'; '.join(p for p in parts if p)})"
    )


def _missing_images(root: Path, classes: list[str], found: set[int]) -> str:
    """One line on what an image folder lacks: class sub-folders, or images in some of them."""
    expected = f"expected one sub-folder per class holding images ({', '.join(IMAGE_EXTENSIONS[:4])}, ...)"
    if not classes:
        return f"no images in {root}: it has no class sub-folders; {expected}"
    empty = [name for index, name in enumerate(classes) if index not in found]
    shown = ", ".join(empty[:3]) + (f" and {len(empty) - 3} more" if len(empty) > 3 else "")
    return f"no images in {len(empty)} of the {len(classes)} class folders of {root} ({shown}); {expected}"


class Unreadable(str):
    """What a dataset yields in place of a sample it could not read: the message naming the file."""


class ImageFolderDataset(Dataset):
    """(image tensor, label) pairs from DIR/CLASS/IMAGE.

    on_error="skip": an unreadable image yields an :class:`Unreadable` (its message, with a warning),
    dropped by :func:`collate_skipping` and counted; on_error="raise": DataError naming the file.
    """

    def __init__(self, root: Path, transform: Callable, on_error: str = "skip") -> None:
        if on_error not in ("skip", "raise"):
            raise DataError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if not root.is_dir():
            raise DataError(f"data directory {root} does not exist")
        self.classes, self.samples = scan_classes(root)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.root = root
        self.transform = transform
        self.on_error = on_error

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            img = open_image(path, "RGB")
        except DataError as err:  # unreadable, or too large to decode safely
            return unreadable(str(err), self.on_error)
        return self.transform(img), label


def unreadable(message: str, on_error: str) -> Unreadable:
    """The marker of a sample that could not be read (with a warning); DataError with on_error="raise"."""
    if on_error == "raise":
        raise DataError(f"unreadable image: {message}")
    warnings.warn(f"skipping unreadable image: {message}", stacklevel=2)
    return Unreadable(message)


def collate_skipping(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Collate the readable samples; also return the messages naming the unreadable ones (skipped).

    A batch with nothing readable gives empty images (0,) and labels (0,): the trainer and evaluation
    skip batches too small to use (and count them)."""
    good = [item for item in batch if not isinstance(item, Unreadable)]
    skipped = [str(item) for item in batch if isinstance(item, Unreadable)]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), skipped
    images, labels = default_collate(good)
    return images, labels, skipped


class ShardedSampler(torch.utils.data.Sampler[int]):
    """DistributedSampler-like over :func:`sknet.data.order.epoch_order` (the order data held as tensors
    follows too); rank r takes every world_size-th index; `start` skips that many of this rank's indices
    (mid-epoch resume)."""

    def __init__(
        self,
        size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
        repeats: int = 1,
    ) -> None:
        """`repeats`: repeated augmentation (sknet.data.augment.repeat_order)."""
        self.size, self.shuffle, self.seed, self.repeats = size, shuffle, seed, repeats
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        order = epoch_order(self.size, self.shuffle, self.seed, self.epoch, self.repeats, self.world_size, self.pad)
        return order[self.rank :: self.world_size].tolist()

    def __iter__(self):
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return len(self._indices()) - self.start


class FolderBatches:
    """A DataLoader over a :class:`ShardedSampler` with the in-memory loaders' interface: `set_epoch(epoch,
    start_step)` and `len` = batches of the whole epoch (also after a mid-epoch start)."""

    def __init__(self, loader: torch.utils.data.DataLoader) -> None:
        self.loader = loader
        self.sampler: ShardedSampler = loader.sampler
        self.batch_size = loader.batch_size
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.start_step = start_step
        self.sampler.set_epoch(epoch, start_step * self.batch_size)

    def __len__(self) -> int:
        return self.start_step + len(self.loader)

    def __iter__(self):
        return iter(self.loader)
