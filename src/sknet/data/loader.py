"""One entry point to data for training, evaluation and the attention study: :func:`build_loader`.

Whatever the source (tensors held in memory, or an ImageFolder tree decoded by worker processes), the
result is one :class:`~sknet.data.device.DeviceLoader`: it yields (images float on the device, normalised
and in the requested layout, labels, images skipped), has one meaning of `len` (batches in a full epoch)
and of `set_epoch(epoch, start_step)` (exact mid-epoch resume), and carries a :class:`DataInfo`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from sknet.data.config import EVAL_CROP_FRACTION, DataConfig, data_stats
from sknet.data.cores import available_cores
from sknet.data.datasets import Split, build_dataset, dataset_spec
from sknet.data.device import DeviceLoader, Normalizer
from sknet.data.tensors import InMemoryImages, TensorBatchLoader, random_crop_flip
from sknet.errors import ConfigError


@dataclass(frozen=True)
class DataInfo:
    """What a model trained on this data must know about its input (`record`: classes, channels, size,
    crop fraction, interpolation, mean/std, the record its weights will carry), and the split's size."""

    record: DataConfig
    images: int  # in this split (before sharding)
    resizable: bool  # read at any --resolution (decoded images), or only at their stored size (tensors)


def _record(classes, channels: int, size: int, mean, std, crop_fraction: float, interpolation: str) -> DataConfig:
    return DataConfig(
        input_size=size, in_chans=channels, crop_fraction=crop_fraction, interpolation=interpolation,
        mean=tuple(mean), std=tuple(std), classes=tuple(classes), channel_order="L" if channels == 1 else "RGB",
    )  # fmt: skip


MAX_DEFAULT_WORKERS = 8  # enough to feed one GPU from JPEGs (benchmarks/train_vs_step.py); more only by asking


def default_workers() -> int:
    """Loader processes by default: the cores this process may run on (its CPU affinity, which containers
    and SLURM set), at most MAX_DEFAULT_WORKERS. More than the cores available makes PyTorch warn and
    only adds contention."""
    cores = available_cores()
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


@dataclass(frozen=True)
class LoaderOptions:
    """How to read one split. Augmentation, shuffling and dropping the last partial batch go with `train`."""

    batch_size: int
    train: bool = False
    image_size: int = 224  # folder data: crop size; in-memory data keep their native size
    crop_padding: int | None = None  # in-memory training: random-crop padding (None: the dataset's recipe)
    hflip: bool = True
    workers: int = field(default_factory=default_workers)
    bad_images: str = "skip"
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    channels_last: bool = False
    auto_augment: str | None = None  # training: a policy (sknet.data.augment), folder data: in the workers
    random_erase: float = 0.0  # training: probability of erasing a rectangle of each image (on the device)
    aug_repeats: int = 1  # training: repeated augmentation, copies of each image per epoch order (≤ 1: off)
    limit: int | None = None  # the first `limit` images only (evaluation and analysis)
    # Evaluating a model: its preprocessing record (sknet.data_config(model)). Decoded images are then
    # normalised with its mean/std and resized/cropped with its crop fraction and interpolation; tensors
    # held in memory keep their own statistics. None: the data's own (ImageNet's for decoded images).
    record: DataConfig | None = None


def build_loader(
    dataset: str | Dataset,
    split: str | Split,
    options: LoaderOptions,
    device: torch.device | str = "cpu",
    data_dir: str | Path | None = None,
    download: bool = False,
    images: InMemoryImages | Dataset | None = None,
) -> DeviceLoader:
    """A loader over `split` of `dataset`: a name of :data:`~sknet.data.datasets.DATASETS`, or your own
    map-style Dataset of (image, label) with image a uint8 (C, H, W) tensor, a PIL image or a path (see
    :mod:`sknet.data.anydata`; `split` then only picks the transforms via `options.train`). `images`: the
    caller's own data in place of the named dataset's. ConfigError/DataError on bad options or data."""
    if isinstance(dataset, Dataset):
        dataset, images = "custom", dataset
    split = Split(split)
    if options.batch_size < 1:
        raise ConfigError(f"batch size must be ≥ 1, got {options.batch_size}")
    if options.limit is not None and options.limit < 1:
        raise ConfigError(f"the image limit must be ≥ 1, got {options.limit}")
    source = images if images is not None else build_dataset(dataset, data_dir, split, download)
    pin = torch.device(device).type == "cuda"
    in_memory = isinstance(source, InMemoryImages)
    if in_memory:
        batches, info = _in_memory(source, options, dataset_spec(dataset).crop_padding)
    elif isinstance(source, Dataset):
        batches, info = _any_dataset(source, options, pin)
    elif dataset == "wds":
        batches, info = _shards(source, options, pin)
    else:
        batches, info = _folder(Path(source), options, pin)
    normalizer = Normalizer(info.record.mean, info.record.std, options.channels_last)
    augment = None
    if options.train and ((options.auto_augment and in_memory) or options.random_erase > 0):
        from sknet.data.augment import BatchAugment

        policy = options.auto_augment if in_memory else None  # folder data: per sample in the workers
        augment = BatchAugment(options.seed, options.rank, policy, options.random_erase)
    loader = DeviceLoader(batches, torch.device(device), normalizer, augment)
    loader.info = info
    # Whether a batch can lose images (unreadable files skipped): the trainer then agrees across ranks on
    # skipping a batch left too small. Tensors held in memory are always readable.
    loader.may_skip = not isinstance(source, InMemoryImages) and options.bad_images == "skip"
    return loader


def _in_memory(data: InMemoryImages, opt: LoaderOptions, recipe_padding: int):
    if opt.limit is not None:
        data = InMemoryImages(data.images[: opt.limit], data.labels[: opt.limit], data.classes, data.mean, data.std)
    padding = recipe_padding if opt.crop_padding is None else opt.crop_padding
    common = dict(rank=opt.rank, world_size=opt.world_size)
    if opt.train:
        augment = random_crop_flip(padding, opt.hflip)
        batches = TensorBatchLoader(
            data,
            opt.batch_size,
            shuffle=True,
            drop_last=True,
            augment=augment,
            seed=opt.seed,
            repeats=opt.aug_repeats,
            **common,
        )
    else:
        batches = TensorBatchLoader(data, opt.batch_size, pad=False, **common)
    channels, size = data.image_size[0], data.image_size[1]
    info = DataInfo(_record(data.classes, channels, size, data.mean, data.std, 1.0, "bilinear"), len(data), False)
    return batches, info


def _decoded_channels(opt: LoaderOptions) -> int:
    """Channels decoded images are prepared with: the evaluated model's (1: grayscale, as `sknet predict`
    prepares an image for it), else colour."""
    return 1 if opt.record is not None and opt.record.in_chans == 1 else 3


def _folder(root: Path, opt: LoaderOptions, pin: bool):
    from sknet.data.folder import ImageFolderDataset

    channels = _decoded_channels(opt)
    mean, std = _stats(opt, channels)
    # uint8 out of the workers; normalised on the device (DeviceLoader). The folder is scanned once.
    dataset = ImageFolderDataset(root, _transform(opt, mean, std, channels), opt.bad_images)
    count = len(dataset) if opt.limit is None else min(opt.limit, len(dataset))
    if count < len(dataset):
        dataset.samples = dataset.samples[:count]
    return _decoded(dataset, count, dataset.classes, channels, mean, std, opt, pin)


def _any_dataset(source: Dataset, opt: LoaderOptions, pin: bool):
    from sknet.data.anydata import TransformedDataset, describe

    classes, channels = describe(source)
    mean, std = _stats(opt, channels)
    dataset = TransformedDataset(source, _transform(opt, mean, std, channels), channels, opt.bad_images)
    count = len(dataset) if opt.limit is None else min(opt.limit, len(dataset))
    return _decoded(dataset, count, classes, channels, mean, std, opt, pin)


def _shards(shards, opt: LoaderOptions, pin: bool):
    from sknet.data.shards import ShardBatches, ShardStream

    channels = _decoded_channels(opt)
    mean, std = _stats(opt, channels)
    stream = ShardStream(shards, _transform(opt, mean, std, channels), opt.batch_size, opt.train, opt.bad_images,
                         opt.seed, opt.rank, opt.world_size, opt.limit)  # fmt: skip
    info = DataInfo(_record(shards.classes, channels, opt.image_size, mean, std, *_crop(opt)), stream.total, True)
    return ShardBatches(stream, opt.workers, pin), info


def _stats(opt: LoaderOptions, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Decoded images' normalisation: the evaluated model's (its record), else the default for `channels`."""
    if opt.record is not None and len(opt.record.mean) == channels:
        return opt.record.mean, opt.record.std
    return data_stats(channels)


def _crop(opt: LoaderOptions) -> tuple[float, str]:
    """Decoded images' evaluation crop fraction and interpolation: the evaluated model's, else the paper's."""
    return (opt.record.crop_fraction, opt.record.interpolation) if opt.record else (EVAL_CROP_FRACTION, "bilinear")


def _transform(opt: LoaderOptions, mean, std, channels: int):
    from sknet.data.config import eval_transform
    from sknet.data.transforms import train_transform

    if opt.train:  # decoded images: augmented per sample in the loader workers
        return train_transform(opt.image_size, mean, std, normalize=False, auto_augment=opt.auto_augment)
    crop_fraction, interpolation = _crop(opt)
    return eval_transform(opt.image_size, mean, std, crop_fraction, channels, False, interpolation)


def _decoded(dataset: Dataset, count: int, classes, channels: int, mean, std, opt: LoaderOptions, pin: bool):
    """Batches of images decoded by `opt.workers` processes: the first `count` samples of `dataset`,
    sharded over ranks by a :class:`~sknet.data.folder.ShardedSampler`, unreadable ones skipped."""
    from sknet.data.folder import FolderBatches, ShardedSampler, collate_skipping

    repeats = opt.aug_repeats if opt.train else 1
    sampler = ShardedSampler(count, opt.train, opt.seed, opt.rank, opt.world_size, pad=opt.train, repeats=repeats)
    loader = torch.utils.data.DataLoader(
        dataset,
        opt.batch_size,
        sampler=sampler,
        num_workers=opt.workers,
        collate_fn=collate_skipping,
        pin_memory=pin,
        drop_last=opt.train,
        persistent_workers=opt.train and opt.workers > 0,
    )
    info = DataInfo(_record(classes, channels, opt.image_size, mean, std, *_crop(opt)), count, True)
    return FolderBatches(loader), info
