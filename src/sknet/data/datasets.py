"""Data sources: Fashion-MNIST (offline from Debian's package), CIFAR-10/100, ImageFolder trees, synthetic.

Small datasets load into memory (:class:`InMemoryImages`); ImageFolder trees stream from disk through
torchvision transforms. Every "data not there" case raises DataError saying how to get the data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sknet.data.idx import read_idx
from sknet.data.split import Split
from sknet.data.tensors import InMemoryImages
from sknet.errors import ConfigError, DataError, one_line

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
SYNTHETIC_CLASSES = 4
# Where Debian's `dataset-fashion-mnist` package installs the files (`dpkg -L dataset-fashion-mnist`).
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class DataSpec:
    """What a data source is: its kind of storage, native image size and default augmentation padding."""

    name: str
    in_memory: bool
    crop_padding: int  # random-crop padding of the in-memory recipe (CIFAR: 4)
    description: str
    package: str | None = None  # an optional package it needs (checked before anything is read)
    classes: int | None = None  # a fixed number of classes (None: the data's own, an image folder's)
    channels: int | None = None  # the images' fixed channels (None: decoded, read at the channels asked for)


FASHION = dict(classes=len(FASHION_MNIST_CLASSES), channels=1)
DATASETS: dict[str, DataSpec] = {
    "fashion_mnist": DataSpec("fashion_mnist", True, 2, "Fashion-MNIST 28×28 grayscale, 10 classes", **FASHION),
    "fashion_mnist_multiscale": DataSpec(
        "fashion_mnist_multiscale",
        True,
        0,
        "Fashion-MNIST objects at random scales 0.75–2× on a 56×56 canvas",
        **FASHION,
    ),
    "fashion_mnist_canvas": DataSpec(
        "fashion_mnist_canvas", True, 0, "Fashion-MNIST objects at scale 1 in the centre of a 56×56 canvas", **FASHION
    ),
    "fashion_mnist_multiscale_half": DataSpec(
        "fashion_mnist_multiscale_half",
        True,
        0,
        "the same at half size: objects of 14 pixels at 0.75–2× on a 28×28 canvas",
        **FASHION,
    ),
    "fashion_mnist_canvas_half": DataSpec(
        "fashion_mnist_canvas_half",
        True,
        0,
        "Fashion-MNIST objects of 14 pixels in the centre of a 28×28 canvas",
        **FASHION,
    ),
    "cifar10": DataSpec("cifar10", True, 4, "CIFAR-10 32×32, torchvision format", classes=10, channels=3),
    "cifar100": DataSpec("cifar100", True, 4, "CIFAR-100 32×32, torchvision format", classes=100, channels=3),
    "imagefolder": DataSpec("imagefolder", False, 0, "ImageNet-style tree: DIR/train/CLASS/*.jpg, DIR/val/..."),
    "wds": DataSpec(
        "wds", False, 0, "WebDataset tar shards: DIR/train-{000000..000127}.tar with DIR/info.json", "webdataset"
    ),
    "synthetic": DataSpec(
        "synthetic",
        True,
        2,
        "random class-coded images, for tests and smoke runs",
        classes=SYNTHETIC_CLASSES,
        channels=1,
    ),
}


def dataset_spec(name: str) -> DataSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


def _find_fashion_mnist(root: Path | None) -> Path | None:
    # An explicit folder is the only place looked at; without one, Debian's package location.
    if root is not None:
        candidates = [root, root / "FashionMNIST" / "raw", root / "fashion-mnist"]
    else:
        candidates = [DEBIAN_FASHION_MNIST]
    for folder in candidates:
        name = _FMNIST_FILES["train"][0]
        if (folder / name).exists() or (folder / f"{name}.gz").exists():
            return folder
    return None


def _idx_file(folder: Path, name: str) -> Path:
    plain = folder / name
    return plain if plain.exists() else folder / f"{name}.gz"


def fetch_dataset(what: str, target: Path, fetch) -> None:
    """Run `fetch()` (a torchvision download into `target`); a failure (no network, a refused or cut
    connection: many exception types) is one DataError line, and the folders it made are removed again."""
    before = {p for p in target.rglob("*")} if target.exists() else set()
    made_target = not target.exists()
    try:
        fetch()
    except Exception as err:  # urllib, http, ssl and OSError alike mean "could not download"
        if target.exists():
            made = [p for p in target.rglob("*") if p.is_dir() and p not in before]
            for folder in sorted(made, key=lambda p: len(p.parts), reverse=True) + ([target] if made_target else []):
                if not any(folder.iterdir()):
                    folder.rmdir()
        reason = one_line(getattr(err, "reason", None) or err)
        raise DataError(f"downloading {what} to {target} failed (no network?): {reason}") from None


def load_fashion_mnist(root: str | Path | None, split: Split, download: bool = False) -> InMemoryImages:
    root = Path(root) if root is not None else None
    folder = _find_fashion_mnist(root)
    if folder is None and download:
        from torchvision.datasets import FashionMNIST

        target = root or Path("data")

        def fetch() -> None:
            FashionMNIST(str(target), train=True, download=True)
            FashionMNIST(str(target), train=False, download=True)

        fetch_dataset("Fashion-MNIST", target, fetch)
        folder = _find_fashion_mnist(target)
    if folder is None:
        where = root if root is not None else DEBIAN_FASHION_MNIST
        raise DataError(
            f"Fashion-MNIST not found in {where}. Install it offline with "
            "'sudo apt-get install dataset-fashion-mnist', point --data-dir at a folder holding the IDX files, "
            "or fetch it with torchvision once (sknet train --download)"
        )
    image_file, label_file = (_idx_file(folder, n) for n in _FMNIST_FILES[split.value])
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{image_file} and {label_file} do not hold matching images (N, 28, 28) and labels (N,)")
    return InMemoryImages(
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        list(FASHION_MNIST_CLASSES),
        mean=(0.2860,),
        std=(0.3530,),
    )


def load_cifar(name: str, root: str | Path | None, split: Split, download: bool = False) -> InMemoryImages:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    root = Path(root) if root is not None else Path("data")
    train = split is Split.TRAIN
    if download:
        fetch_dataset(name, root, lambda: cls(str(root), train=train, download=True))
    try:
        ds = cls(str(root), train=train, download=False)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted."
        raise DataError(
            f"{name} not found or corrupted in {root} ({err}). Pass --data-dir pointing at the folder holding "
            f"'{cls.base_folder}', or fetch it with torchvision once (sknet train --download)"
        ) from None
    mean, std = (
        ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
        if name == "cifar10"
        else ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    )
    return InMemoryImages(
        torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
        torch.tensor(ds.targets, dtype=torch.int64),
        list(ds.classes),
        mean,
        std,
    )


def make_synthetic(
    split: Split,
    num_classes: int = SYNTHETIC_CLASSES,
    size: int = 16,
    channels: int = 1,
    count: int = 256,
    seed: int = 0,
) -> InMemoryImages:
    """Learnable toy data: each class is a fixed random pattern plus noise (deterministic in `seed`)."""
    gen = torch.Generator().manual_seed(seed)
    patterns = torch.rand(num_classes, channels, size, size, generator=gen)
    gen.manual_seed(seed + (1 if split is Split.TRAIN else 2))
    labels = torch.randint(0, num_classes, (count,), generator=gen)
    noise = torch.rand(count, channels, size, size, generator=gen)
    images = (0.75 * patterns[labels] + 0.25 * noise) * 255
    return InMemoryImages(
        images.round().to(torch.uint8),
        labels,
        [f"class{i}" for i in range(num_classes)],
        (0.5,) * channels,
        (0.25,) * channels,
    )


def data_shape(name: str, root: str | Path | None, split: str | Split) -> tuple[int | None, int | None]:
    """(classes, channels) of `split` of dataset `name` as far as known without reading it: a named data
    set's fixed ones, an image folder's class sub-folders (decoded images take the channels asked for);
    None where only reading tells (shards name their classes in info.json, read with them)."""
    spec = dataset_spec(name)
    if name == "imagefolder" and root is not None and Path(root).is_dir():
        from sknet.data.folder import find_split_dir

        return sum(1 for entry in os.scandir(find_split_dir(root, Split(split))) if entry.is_dir()), None
    return spec.classes, spec.channels


def data_folders(name: str, root: str | Path | None, split: str | Split) -> list[Path]:
    """The folders whose files `split` of dataset `name` is read from (an image folder's split, a shard
    folder), for commands that must not write among them; none for data read from fixed files."""
    if root is None or name not in ("imagefolder", "wds"):
        return []
    if name == "wds":
        folder = Path(root) if Path(root).is_dir() else Path(root).parent
        return [folder] if folder.is_dir() else []
    from sknet.data.folder import find_split_dir

    return [find_split_dir(root, Split(split))] if Path(root).is_dir() else []


def build_dataset(name: str, root: str | Path | None, split: str | Split, download: bool = False):
    """An :class:`InMemoryImages` (small datasets) or an image-folder dataset (see :mod:`sknet.data.folder`)."""
    spec = dataset_spec(name)
    split = Split(split)
    if name == "fashion_mnist":
        return load_fashion_mnist(root, split, download)
    if name == "fashion_mnist_multiscale":
        from sknet.data.multiscale import make_multiscale

        # Different seeds per split: test objects get scales and positions of their own.
        return make_multiscale(load_fashion_mnist(root, split, download), seed=1 if split is Split.TRAIN else 2)
    if name == "fashion_mnist_canvas":
        from sknet.data.multiscale import centered_canvas

        return centered_canvas(load_fashion_mnist(root, split, download))
    if name in ("fashion_mnist_multiscale_half", "fashion_mnist_canvas_half"):
        from sknet.data.multiscale import (
            HALF_CANVAS,
            HALF_MEAN,
            HALF_OBJECT,
            HALF_STD,
            centered_canvas,
            make_multiscale,
        )

        base, stats = load_fashion_mnist(root, split, download), (HALF_MEAN, HALF_STD)
        if name == "fashion_mnist_canvas_half":
            return centered_canvas(base, HALF_CANVAS, object_size=HALF_OBJECT, stats=stats)
        seed = 1 if split is Split.TRAIN else 2  # as the full-size data: the test objects' own scales
        return make_multiscale(base, HALF_CANVAS, seed=seed, object_size=HALF_OBJECT, stats=stats)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, root, split, download)
    if name == "synthetic":
        return make_synthetic(split)
    assert not spec.in_memory
    if name == "wds":
        from sknet.data.shards import find_shards, require_webdataset

        require_webdataset()
        return find_shards(root, split.value)
    from sknet.data.folder import find_split_dir

    return find_split_dir(root, split)
