"""ImageNet-style folder trees: DIR/{train,val}/CLASS/IMAGE, with unreadable images skipped or reported."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset, default_collate
from torchvision.datasets.folder import IMG_EXTENSIONS

from sknet.data.augment import repeat_order
from sknet.data.datasets import Split
from sknet.data.images import open_image
from sknet.errors import DataError

_VAL_NAMES = ("val", "validation", "test")


def find_split_dir(root: str | Path | None, split: Split) -> Path:
    """DIR/train for training; DIR/val (or validation, test) for evaluation; DIR itself if it holds classes."""
    if root is None:
        raise DataError("the imagefolder dataset needs --data-dir DIR (with DIR/train/CLASS/*.jpg and DIR/val/...)")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist (expected DIR/train/CLASS/*.jpg and DIR/val/...)")
    names = ("train",) if split is Split.TRAIN else _VAL_NAMES
    for name in names:
        if (root / name).is_dir():
            return root / name
    return root


def _images_under(folder: Path):
    """Image files below `folder`, sorted per directory; symbolic links are followed, but a directory
    already visited (a link loop, or two links to one place) is not entered again."""
    seen: set[str] = set()
    for current, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMG_EXTENSIONS):
                yield os.path.join(current, name)


def scan_classes(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, [(image path, class index)]) of DIR/CLASS/...; DataError when something is empty."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    samples = [(path, index) for index, name in enumerate(classes) for path in _images_under(root / name)]
    counts = {index for _, index in samples}
    if not classes or len(counts) < len(classes):
        raise DataError(_missing_images(root))
    return classes, samples


def _missing_images(root: Path) -> str:
    """One line on what an image folder lacks: class sub-folders, or images in some of them."""
    expected = f"expected one sub-folder per class holding images ({', '.join(IMG_EXTENSIONS[:4])}, ...)"
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        return f"no images in {root}: it has no class sub-folders; {expected}"
    empty = [p.name for p in folders if not any(True for _ in _images_under(p))]
    shown = ", ".join(empty[:3]) + (f" and {len(empty) - 3} more" if len(empty) > 3 else "")
    return f"no images in {len(empty)} of the {len(folders)} class folders of {root} ({shown}); {expected}"


class ImageFolderDataset(Dataset):
    """(image tensor, label) pairs from DIR/CLASS/IMAGE.

    on_error="skip": an unreadable image yields None, dropped by :func:`collate_skipping` and counted;
    on_error="raise": DataError naming the file.
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
            if self.on_error == "raise":
                raise DataError(f"unreadable image: {err}") from None
            warnings.warn(f"skipping unreadable image: {err}", stacklevel=1)
            return None
        return self.transform(img), label


def collate_skipping(batch: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Collate the readable samples; also return how many were skipped."""
    good = [item for item in batch if item is not None]
    skipped = len(batch) - len(good)
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), skipped
    images, labels = default_collate(good)
    return images, labels, skipped


class ShardedSampler(torch.utils.data.Sampler[int]):
    """DistributedSampler-like: the order of epoch e is a function of (seed, e); rank r takes every
    world_size-th index; `start` skips that many of this rank's indices (mid-epoch resume)."""

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
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = repeat_order(torch.randperm(self.size, generator=gen), self.repeats).tolist()
        else:
            order = list(range(self.size))
        if self.pad and self.size % self.world_size:
            order += order[: self.world_size - self.size % self.world_size]
        return order[self.rank :: self.world_size]

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
