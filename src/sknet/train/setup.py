"""What a training run is built from: its loaders, its model, and the metadata its weights carry."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from sknet.data.cores import available_cores
from sknet.data.device import DeviceLoader
from sknet.data.folder import check_same_classes
from sknet.data.loader import DataInfo, LoaderOptions, build_loader
from sknet.data.tensors import InMemoryImages
from sknet.errors import ConfigError
from sknet.models import create_model, model_info
from sknet.models.registry import DATA_OPTIONS, settle_fixed
from sknet.train.config import CUDA_GRAPH_MODES, TrainConfig
from sknet.train.distributed import DistInfo
from sknet.weights import read_metadata


def configure_torch(config: TrainConfig, device: torch.device, dist: DistInfo | None = None) -> None:
    """Threads, determinism, and cuDNN autotuning (fixed shapes: let cuDNN pick its fastest convolutions).

    Threads: `config.threads`; by default, with several processes of the job on this machine, its cores
    divided among them (each would otherwise take every core: tens of times slower), said in one line."""
    if config.threads:
        torch.set_num_threads(config.threads)
    elif dist is not None and dist.machine_processes > 1:
        cores = available_cores()
        threads = max(1, cores // dist.machine_processes)
        torch.set_num_threads(threads)
        if dist.local_rank == 0:
            print(
                f"threads: {threads} per process ({cores} cores ÷ {dist.machine_processes} processes of this run "
                "on this machine; --threads N to choose)",
                flush=True,
            )
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def wrap_for_training(model: nn.Module, config: TrainConfig, dist: DistInfo) -> nn.Module:
    """The module the step calls: the model, under DDP with several processes, compiled if asked."""
    if dist.enabled:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if not config.compile:
        return model
    return torch.compile(model, mode=None if config.compile_mode == "default" else config.compile_mode)


def step_marker(config: TrainConfig, device: torch.device):
    """What each micro-batch's forward starts with. With CUDA graphs (``--compile-mode reduce-overhead`` or
    ``max-autotune`` on a GPU): ``torch.compiler.cudagraph_mark_step_begin``, telling cudagraph trees that the
    graphs' outputs of the step before (logits, saved activations) are done with; without the mark they guess
    the boundary, and a backward can find its saved tensors overwritten. Otherwise nothing."""
    if config.compile and device.type == "cuda" and config.compile_mode in CUDA_GRAPH_MODES:
        return torch.compiler.cudagraph_mark_step_begin
    return lambda: None


def build_loaders(
    config: TrainConfig,
    dist: DistInfo,
    datasets: tuple[InMemoryImages | Dataset, InMemoryImages | Dataset] | None = None,
) -> tuple[DeviceLoader, DeviceLoader]:
    """(train, test) loaders of this process's shard; `datasets`: the caller's own data instead (tensors
    in memory, or any map-style Dataset of (image, label): see :func:`sknet.data.build_loader`)."""
    own = datasets or (None, None)
    # Every loader option that is also a training option, by name (image_size, workers, seed, the
    # augmentations, ...): a new one declared in both reaches the loaders without a line here.
    per_process = {"batch_size", "train", "rank", "world_size"}
    shared = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(LoaderOptions)
        if f.name not in per_process and hasattr(config, f.name)
    }
    loaders = []
    for split, train, images in (("train", True, own[0]), ("test", False, own[1])):
        options = LoaderOptions(
            **shared,
            batch_size=config.batch_size if train else max(config.batch_size, 256),
            train=train,
            rank=dist.rank,
            world_size=dist.world_size,
        )
        loaders.append(
            build_loader(config.dataset, split, options, dist.device, config.data_dir, config.download, images)
        )
    train_loader, test_loader = loaders
    if len(train_loader) == 0:
        images, per_step = train_loader.info.images, config.batch_size * dist.world_size
        raise ConfigError(
            f"batch size {config.batch_size} × {dist.world_size} process(es) = {per_step} is more than the "
            f"{images} training images: not one full batch to train on; use --batch-size ≤ "
            f"{max(images // dist.world_size, 1)}"
        )
    check_same_classes(
        train_loader.info.record.classes, test_loader.info.record.classes, config.data_dir or config.dataset
    )
    return train_loader, test_loader


def build_model(config: TrainConfig, data: DataInfo, dist: DistInfo) -> tuple[nn.Module, dict[str, Any]]:
    """The model on the device, sized for `data`, starting from ``config.init_weights`` if set (fitted to
    the data's classes and channels); and its options other than those taken from the data."""
    info = model_info(config.model)
    options = dict(config.model_options)
    fixed = {"num_classes": len(data.record.classes), "in_chans": data.record.in_chans}
    given = {key: options[key] for key in DATA_OPTIONS if key in options}
    settled = settle_fixed(fixed, given, "the data", fine_tune=False)
    options.update({key: value for key, value in settled.items() if key in info.options})
    weights = {"weights": config.init_weights} if config.init_weights else {}
    model = create_model(config.model, **weights, **options)
    if config.sync_bn and dist.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(dist.device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, {k: v for k, v in options.items() if k not in DATA_OPTIONS}


def starting_point(config: TrainConfig, resume: Path | None) -> tuple[TrainConfig, dict[str, Any] | None]:
    """(the configuration to build the model from, where its starting weights came from). A resumed run's
    weights and record come from its checkpoint, read once by :func:`sknet.train.state.resume_from`:
    ``init_weights`` is not read again. A new run's record: the file (path, SHA-256) and what it recorded of
    its own training (model, dataset, classes, source)."""
    if resume is not None:
        return dataclasses.replace(config, init_weights=None), None
    if not config.init_weights:
        return config, None
    path = Path(config.init_weights)
    recorded = read_metadata(path)
    record = {
        "path": str(path.resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        **{key: recorded[key] for key in ("model", "dataset", "num_classes", "source") if key in recorded},
    }
    return config, record


def weights_metadata(
    config: TrainConfig, model_options: dict[str, Any], data: DataInfo, init_record: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What `create_model(weights=)`, `sknet eval`, `sknet predict` and the exports read back: the model,
    its options, the training data set, the input record (the data's :class:`~sknet.data.config.DataConfig`), and where
    the starting weights came from (`init_record`, see :func:`starting_point`)."""
    record = data.record
    return {
        "model": config.model,
        "model_options": json.loads(json.dumps(model_options, default=str)),
        "num_classes": len(record.classes),
        "dataset": config.dataset,
        **record.to_metadata(),
        **({"init_weights": init_record} if init_record else {}),
    }
