"""The preprocessing record: how a model's input is prepared, and the evaluation transform it implies.

The ground floor of the package (it imports nothing of sknet but :mod:`sknet.errors`), as torchvision's
``transforms/_presets.py``: weights files, checkpoints, exports, timm's ``pretrained_cfg``, ``sknet eval``,
``sknet predict`` and the attention study all read a model's :class:`DataConfig` (``model.data_config``)
and nothing else; the data pipeline builds one for the data it reads (:class:`sknet.data.loader.DataInfo`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torchvision.transforms import v2 as T

from sknet.errors import CheckpointError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's and timm's ImageNet statistics
IMAGENET_STD = (0.229, 0.224, 0.225)
# Grayscale data without statistics of their own: the mean of ImageNet's three channels (0.449, 0.226),
# what timm does when it adapts an RGB model to in_chans=1.
GRAY_MEAN, GRAY_STD = (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)
EVAL_CROP_FRACTION = 224 / 256  # the paper: 224 crops of images resized to 256 on the shorter side
MAX_INPUT_SIZE = 4096  # pixels a side: larger metadata is refused (a 100000² input would need 100+ GB)
MAX_CLASSES = 1_000_000
MAX_CHANNELS = 64
INTERPOLATION = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


def data_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for images of `channels` channels without statistics of their own (ImageNet's; for one
    channel their average)."""
    return (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (GRAY_MEAN * channels, GRAY_STD * channels)


@dataclass(frozen=True)
class DataConfig:
    """How a model's input is prepared: the record saved with weights, checkpoints and exports.

    `transform()` gives the evaluation transform (resize the shorter side to input_size / crop_fraction,
    centre-crop input_size; crop_fraction 1: resize straight to input_size), the one `sknet predict` uses.
    Built from untrusted metadata with :meth:`from_metadata` (CheckpointError naming the bad field).
    """

    input_size: int = 224  # pixels a side of the (square) input
    in_chans: int = 3
    crop_fraction: float = EVAL_CROP_FRACTION  # timm's crop_pct
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN  # per channel, of images scaled to [0, 1]
    std: tuple[float, ...] = IMAGENET_STD
    classes: tuple[str, ...] | None = None
    channel_order: str = "RGB"  # of the images before normalisation; "L" for one channel

    def to_metadata(self) -> dict[str, Any]:
        meta = asdict(self)
        meta.update(mean=list(self.mean), std=list(self.std), classes=list(self.classes) if self.classes else None)
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], source: str = "metadata") -> DataConfig:
        """The record in `meta` (older files: what they have, defaults for the rest), validated."""
        in_chans = _int(meta, "in_chans", 3, 1, MAX_CHANNELS, source)
        default_stats = (IMAGENET_MEAN, IMAGENET_STD) if in_chans == 3 else ((0.5,) * in_chans, (0.5,) * in_chans)
        classes = meta.get("classes")
        if classes is not None:
            if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
                raise CheckpointError(f"{source}: classes must be a list of names")
            if not 1 <= len(classes) <= MAX_CLASSES:
                raise CheckpointError(f"{source}: {len(classes)} classes is out of range (1–{MAX_CLASSES})")
            classes = tuple(classes)
        config = cls(
            input_size=_int(meta, "input_size", 224, 1, MAX_INPUT_SIZE, source),
            in_chans=in_chans,
            crop_fraction=_float(meta, "crop_fraction", EVAL_CROP_FRACTION, source),
            interpolation=str(meta.get("interpolation", "bilinear")),
            mean=_stats(meta, "mean", default_stats[0], in_chans, source),
            std=_stats(meta, "std", default_stats[1], in_chans, source),
            classes=classes,
            channel_order=str(meta.get("channel_order", "RGB" if in_chans == 3 else "L")),
        )
        if not 0 < config.crop_fraction <= 1:
            raise CheckpointError(f"{source}: crop_fraction={config.crop_fraction} is out of range (0–1]")
        if config.interpolation not in INTERPOLATION:
            raise CheckpointError(f"{source}: unknown interpolation {config.interpolation!r}")
        if any(v <= 0 for v in config.std):
            raise CheckpointError(f"{source}: std must be positive, got {list(config.std)}")
        return config

    def transform(self, size: int | None = None, normalize: bool = True) -> T.Compose:
        """The evaluation transform: a PIL image → a float tensor (C, size, size), normalised with the
        record's mean/std (`normalize=False`: uint8, for loaders that normalise on the device). `size`:
        another resolution than the record's (the same crop fraction and interpolation)."""
        return eval_transform(
            size or self.input_size, self.mean, self.std, self.crop_fraction, self.in_chans, normalize,
            self.interpolation,
        )  # fmt: skip


def data_config(model: nn.Module) -> DataConfig:
    """The input record of a model from :func:`sknet.create_model` (recorded in its weights, else its
    defaults); for any other module, ImageNet's preprocessing at 224 for its number of input channels."""
    config = getattr(model, "data_config", None)
    if isinstance(config, DataConfig):
        return config
    return DataConfig.from_metadata({"in_chans": int(getattr(model, "in_chans", 3))}, type(model).__name__)


def transforms(model: nn.Module) -> T.Compose:
    """The evaluation transform of `model` (what `sknet predict` applies): PIL image → normalised tensor."""
    return data_config(model).transform()


def to_tensor(mean: Sequence[float], std: Sequence[float], normalize: bool) -> list:
    """PIL image → plain tensor steps (``ToPureTensor``: no tv_tensors subclass leaks into collation or
    models). normalize=False: uint8, 4× less to collate and copy; the loader normalises on the device."""
    if not normalize:
        return [T.PILToTensor(), T.ToPureTensor()]
    return [T.PILToTensor(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std), T.ToPureTensor()]


def eval_transform(
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_fraction: float = EVAL_CROP_FRACTION,
    channels: int = 3,
    normalize: bool = True,
    interpolation: str = "bilinear",
) -> T.Compose:
    """Resize the shorter side to size / crop_fraction, centre-crop `size` (single-crop protocol).

    crop_fraction = 1 resizes straight to `size` (small-image datasets that were trained uncropped).
    """
    steps: list = [T.Grayscale(1)] if channels == 1 else []
    mode = INTERPOLATION[interpolation]
    if crop_fraction >= 1.0:
        steps.append(T.Resize((size, size), interpolation=mode))
    else:
        # Rounded down, as timm's eval transform (224 / 0.95 → 235), so that both give the same tensor.
        steps += [T.Resize(math.floor(size / crop_fraction), interpolation=mode), T.CenterCrop(size)]
    steps += to_tensor(mean, std, normalize)
    return T.Compose(steps)


def _int(meta: dict, key: str, default: int, low: int, high: int, source: str) -> int:
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CheckpointError(f"{source}: {key}={value!r} is out of range (an integer {low}–{high})")
    return value


def _float(meta: dict, key: str, default: float, source: str) -> float:
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CheckpointError(f"{source}: {key}={value!r} is not a finite number")
    return float(value)


def _stats(meta: dict, key: str, default: tuple, channels: int, source: str) -> tuple[float, ...]:
    value = meta.get(key, default)
    if (
        not isinstance(value, list | tuple)
        or len(value) != channels
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise CheckpointError(f"{source}: {key} must be {channels} finite numbers (one per channel), got {value!r}")
    return tuple(float(v) for v in value)


def check_record(meta: dict[str, Any], source: str) -> dict[str, Any]:
    """Validate the sknet metadata of a file (weights, checkpoint, export) before anything is sized from
    it; returns it unchanged. CheckpointError naming the first bad field."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: its sknet metadata is not a mapping")
    if "num_classes" in meta:
        _int(meta, "num_classes", 1, 1, MAX_CLASSES, source)
        classes = meta.get("classes")
        if isinstance(classes, list) and classes and len(classes) != meta["num_classes"]:
            raise CheckpointError(f"{source}: {len(classes)} class names for num_classes={meta['num_classes']}")
    if not isinstance(meta.get("model_options", {}), dict):
        raise CheckpointError(f"{source}: model_options must be a mapping")
    if "model" in meta and not isinstance(meta["model"], str):
        raise CheckpointError(f"{source}: model must be a name")
    DataConfig.from_metadata(meta, source)
    return meta
