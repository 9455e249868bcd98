"""Calibration images for static int8 quantization, read with the model's own preprocessing.

`--calibration` names either a folder of images (any layout: searched recursively, e.g. an ImageNet-style
``train/CLASS/*.jpg`` tree or a flat folder) or a dataset of :data:`sknet.data.datasets.DATASETS` (its train
split, from ``--data-dir``). Every check (exists, not empty, channels, size) runs before any export work;
a failure is one DataError (exit 3) naming the problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sknet.data.config import DataConfig
from sknet.errors import ConfigError, DataError, one_line, plural

DEFAULT_CALIBRATION_SIZE = 512  # images; ONNX Runtime's examples calibrate on a few hundred
CALIBRATION_SEED = 0  # which images of a dataset are drawn: the same ones on every run


def calibration_images(
    source: str, record: DataConfig, count: int = DEFAULT_CALIBRATION_SIZE, data_dir: str | Path | None = None
) -> tuple[np.ndarray, str]:
    """(float32 array (n, record.in_chans, record.input_size, record.input_size) normalised as
    ``record.transform()`` does, a one-line description of where they came from), n = min(count, available).

    `source`: a folder of images, or a dataset name (train split, in `data_dir`). Raises ConfigError for
    count < 1 or an unknown name, DataError for an empty folder, unreadable images, images whose channels
    are not the record's (a colour image for a one-channel model or the reverse), or a dataset of another
    channel count or image size."""
    if count < 1:
        raise ConfigError(f"the calibration size (images) must be ≥ 1, got {count}")
    folder = Path(source)
    if folder.is_dir():
        return _folder_images(folder, record, count)
    from sknet.data.datasets import DATASETS, build_dataset
    from sknet.data.tensors import InMemoryImages

    if source not in DATASETS:
        raise ConfigError(
            f"calibration source {one_line(source)} is neither a folder nor a dataset ({', '.join(DATASETS)})"
        )
    data = build_dataset(source, data_dir, "train")
    if not isinstance(data, InMemoryImages):  # an image-folder dataset: its train split's folder
        if not isinstance(data, (str, Path)):
            raise ConfigError(f"calibration source {source}: give the folder of its images instead")
        return _folder_images(Path(data), record, count)
    return _tensor_images(data, source, record, count)


def _tensor_images(data, name: str, record: DataConfig, count: int) -> tuple[np.ndarray, str]:
    channels, height, width = data.image_size
    if channels != record.in_chans:
        raise DataError(f"calibration set {name} has {channels}-channel images; the model takes {record.in_chans}")
    if height != record.input_size or width != record.input_size:
        raise DataError(
            f"calibration set {name} has {height}×{width} images; the model was exported for "
            f"{record.input_size}×{record.input_size}"
        )
    generator = torch.Generator().manual_seed(CALIBRATION_SEED)
    chosen = torch.randperm(len(data), generator=generator)[:count]
    mean = torch.tensor(record.mean).view(1, -1, 1, 1)
    std = torch.tensor(record.std).view(1, -1, 1, 1)
    x = (data.images[chosen].float() / 255 - mean) / std  # what the eval loader's Normalizer computes
    return x.numpy().astype(np.float32), f"{name} train split, {plural(len(chosen), 'image')} (seed {CALIBRATION_SEED})"


def _folder_images(folder: Path, record: DataConfig, count: int) -> tuple[np.ndarray, str]:
    from sknet.data.images import IMAGE_EXTENSIONS, image_channels, open_image

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise DataError(
            f"calibration folder {one_line(folder)} holds no images ({', '.join(IMAGE_EXTENSIONS[:4])}, ...)"
        )
    if len(files) > count:  # evenly spaced over the sorted list: every class folder of a tree contributes
        files = [files[i] for i in np.linspace(0, len(files) - 1, count).round().astype(int)]
    mode = "L" if record.in_chans == 1 else "RGB"
    for path in files:  # headers only: the channel check costs no decoding
        channels = image_channels(path)
        if channels != record.in_chans:
            raise DataError(
                f"calibration image {one_line(path)} has {channels} channels; the model takes "
                f"{record.in_chans} ({record.channel_order})"
            )
    transform = record.transform()
    x = torch.stack([transform(open_image(path, mode)) for path in files])
    return x.numpy().astype(np.float32), f"{one_line(folder)}, {plural(len(files), 'image')}"
