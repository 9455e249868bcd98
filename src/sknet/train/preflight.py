"""Checks of a training configuration that cost nothing, run before any data is read or model built.

A typo in a model name must not wait for (or be hidden behind) a data set that is missing, and a
precision the device cannot run must not wait for the data to load.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from sknet.data.datasets import dataset_spec
from sknet.errors import CheckpointError, ConfigError
from sknet.models import model_info
from sknet.train.config import Precision, TrainConfig
from sknet.weights import previous_path, read_metadata


def check_config(config: TrainConfig, resume: str | Path | None = None) -> None:
    """Device-independent checks: model name and options, dataset name, the resume file's presence, the
    starting weights' file (its header: the model it holds)."""
    model_info(config.model).check_options(config.model_options)  # unknown names: close matches
    package = dataset_spec(config.dataset).package
    if package is not None and importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"the {config.dataset} dataset needs the {package} package: pip install 'sknet[{config.dataset}]'"
        )
    if config.compile_mode != "default" and not config.compile:
        raise ConfigError(f"compile_mode {config.compile_mode!r} needs compile: add --compile")
    if config.weights_from != "raw" and config.ema_decay is None:
        raise ConfigError(f"weights_from {config.weights_from!r} needs an EMA: add --ema-decay (e.g. 0.9998)")
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install 'sknet[tensorboard]'")
    if resume is not None and not Path(resume).exists() and not previous_path(Path(resume)).is_file():
        raise CheckpointError(f"checkpoint {resume} does not exist")
    if config.init_weights and resume is None:  # the file exists, is readable and holds this model
        found = read_metadata(config.init_weights).get("model")
        if found and found != config.model:
            raise CheckpointError(
                f"--init-weights {config.init_weights} holds weights of model {found!r}, not {config.model!r}: "
                f"add --model {found}"
            )


def check_device(config: TrainConfig, device: torch.device) -> None:
    """Checks that depend on the resolved device: precisions and BatchNorm synchronisation."""
    if config.precision is Precision.FP16 and device.type != "cuda":
        raise ConfigError(f"precision fp16 needs a CUDA device (this run is on {device}); use bf16 on CPUs")
    if config.sync_bn and device.type != "cuda":
        raise ConfigError(
            f"sync_bn needs CUDA devices (this run is on {device}; torch's SyncBatchNorm does not run on CPUs)"
        )
