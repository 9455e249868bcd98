"""Any map-style dataset of (image, label) pairs, read like an image folder.

An image may be a uint8 tensor (C, H, W) with C = 1 or 3, a PIL image, or a path (opened with
:func:`sknet.data.images.open_image`: size checked, EXIF orientation applied, unreadable files skipped
or raised as for folders). Labels are class indices 0 … K−1. Every image goes through the folder
transforms (random-size crop and flip in training, resize and centre crop in evaluation), so images of
any size can be mixed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from os import PathLike

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import to_pil_image

from sknet.data.folder import unreadable
from sknet.data.images import open_image
from sknet.errors import DataError


def to_pil(image, on_error: str = "skip") -> Image.Image | str:
    """A PIL image from a uint8 (C, H, W) tensor, a PIL image or a path; a path that cannot be read gives
    an :class:`~sknet.data.folder.Unreadable` (or DataError with on_error="raise")."""
    if isinstance(image, Image.Image):
        return image if image.mode in ("L", "RGB") else image.convert("RGB")
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] not in (1, 3):
            raise DataError(f"a dataset image tensor must be uint8 (C, H, W) with C = 1 or 3, got "
                            f"{image.dtype} {tuple(image.shape)}")  # fmt: skip
        return to_pil_image(image)
    if isinstance(image, (str, PathLike)):
        try:
            return open_image(image, "RGB")
        except DataError as err:
            return unreadable(str(err), on_error)
    raise DataError(
        f"a dataset item's image must be a uint8 (C, H, W) tensor, a PIL image or a path, got {type(image).__name__}"
    )


class TransformedDataset(Dataset):
    """`dataset`'s (image, label) pairs as (transform(PIL image with `channels`), label), or an Unreadable
    for a path that cannot be read."""

    def __init__(self, dataset: Dataset, transform: Callable, channels: int = 3, on_error: str = "skip") -> None:
        self.dataset, self.transform, self.on_error = dataset, transform, on_error
        self.mode = "L" if channels == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        pil = to_pil(image, self.on_error)
        if isinstance(pil, str):  # Unreadable
            return pil
        return self.transform(pil if pil.mode == self.mode else pil.convert(self.mode)), int(label)


def describe(dataset: Dataset) -> tuple[list[str], int]:
    """(class names, channels) of a user's dataset: names from its `classes` attribute (torchvision's
    convention), else "0" … "K−1" from its `targets` (or a TensorDataset's labels), else from reading every
    label once (with a warning); channels from its first readable image (1 for L images, else 3)."""
    if len(dataset) == 0:
        raise DataError("the dataset is empty")
    classes = getattr(dataset, "classes", None)
    if classes is None:
        labels = getattr(dataset, "targets", None)
        if labels is None and isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) > 1:
            labels = dataset.tensors[1]
        if labels is None:
            warnings.warn(
                f"reading all {len(dataset)} labels of {type(dataset).__name__} once to count its classes; give "
                "it a `classes` list (names, index = label) to skip this",
                stacklevel=3,
            )
            labels = [dataset[i][1] for i in range(len(dataset))]
        labels = torch.as_tensor(labels).long()
        if labels.min() < 0:
            raise DataError(f"labels must be class indices ≥ 0, got {int(labels.min())}")
        classes = [str(i) for i in range(int(labels.max()) + 1)]
    for index in range(len(dataset)):
        image = to_pil(dataset[index][0])
        if not isinstance(image, str):
            return [str(c) for c in classes], 1 if image.mode == "L" else 3
    raise DataError("no image of the dataset could be read")
