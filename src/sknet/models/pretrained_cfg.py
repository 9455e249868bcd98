"""timm's ``pretrained_cfg`` of an sknet model, derived from its one preprocessing record, and back.

The record is the model's :class:`~sknet.data.config.DataConfig` (``model.data_config``); timm's tools
(``timm.data.resolve_model_data_config`` → ``timm.data.create_transform``) read the dict built here and
give the same tensor as :func:`sknet.transforms`. Key names and meanings are timm's ``PretrainedCfg``
(timm/models/_pretrained.py): ``crop_pct`` is our ``crop_fraction``; ``crop_mode`` "center" resizes the
shorter side to ``input_size / crop_pct`` (rounded down, as timm) and centre-crops, "squash" resizes both
sides, which is what our record means by ``crop_fraction`` 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import nn

from sknet.data.config import EVAL_CROP_FRACTION, IMAGENET_MEAN, IMAGENET_STD, DataConfig, data_config
from sknet.errors import ConfigError
from sknet.models.finetune import CLASSIFIER, FIRST_CONV, channel_stats

PAPER = {"paper_ids": "arXiv:1903.06586", "paper_name": "Selective Kernel Networks"}


def pretrained_cfg(model: nn.Module) -> dict[str, Any]:
    """timm's pretrained_cfg of `model`: the keys timm's data, layer-decay and loading code read, and the size
    of its last feature map at the input size (``pool_size``, models with a head)."""
    meta = getattr(model, "weights_meta", None) or {}
    architecture = meta.get("model", type(model).__name__.lower())
    cfg = pretrained_cfg_of_record(
        data_config(model), architecture, int(getattr(model, "num_classes", 0)), meta.get("source")
    )
    info = getattr(model, "feature_info", None)
    if info and hasattr(model, "fc"):
        side = math.ceil(cfg["input_size"][-1] / int(info[-1]["reduction"]))
        cfg["pool_size"] = (side, side)
    return cfg


def pretrained_cfg_of_record(
    record: DataConfig, architecture: str, num_classes: int, source: str | None
) -> dict[str, Any]:
    """timm's pretrained_cfg of a model of `architecture` preprocessing as `record` says, with `num_classes`
    outputs and weights from `source` (None: none)."""
    size = record.input_size
    return {
        "architecture": architecture,
        "input_size": (record.in_chans, size, size),
        "fixed_input_size": False,
        "interpolation": record.interpolation,
        "crop_pct": record.crop_fraction,
        "crop_mode": "squash" if record.crop_fraction >= 1.0 else "center",
        "mean": record.mean,
        "std": record.std,
        "num_classes": num_classes,
        "label_names": record.classes,
        "first_conv": FIRST_CONV,
        "classifier": CLASSIFIER,
        "source": source,
        "license": "apache-2.0",
        **PAPER,
    }


def data_config_from_pretrained_cfg(cfg: Mapping[str, Any], in_chans: int | None = None) -> DataConfig:
    """Our record of timm's pretrained_cfg (a dict or timm's PretrainedCfg); ConfigError for a crop our
    record cannot express (timm's "border" mode, or "squash" with a crop_pct below 1)."""
    if not isinstance(cfg, Mapping):
        cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else vars(cfg)
    size = tuple(cfg.get("input_size") or (3, 224, 224))
    crop = float(cfg.get("crop_pct") or EVAL_CROP_FRACTION)
    mode = cfg.get("crop_mode") or "center"
    if mode not in ("center", "squash") or (mode == "squash" and crop < 1.0):
        raise ConfigError(f"timm's crop_mode={mode!r} with crop_pct={crop} has no sknet equivalent")
    chans = int(in_chans if in_chans is not None else size[0])
    mean = channel_stats(cfg.get("mean") or IMAGENET_MEAN, chans)  # (an adapted first conv: the average)
    std = channel_stats(cfg.get("std") or IMAGENET_STD, chans)
    labels = cfg.get("label_names")
    meta = {
        "input_size": int(size[-1]),
        "in_chans": chans,
        "crop_fraction": crop,
        "interpolation": cfg.get("interpolation") or "bicubic",  # timm's default when unset
        "mean": list(mean),
        "std": list(std),
        "classes": list(labels) if labels else None,
    }
    return DataConfig.from_metadata(meta, "timm's pretrained_cfg")
