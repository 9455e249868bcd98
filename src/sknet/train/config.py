"""Typed training configuration: defaults ← a YAML/TOML file ← command-line flags; saved with each run."""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib

from sknet.errors import ConfigError
from sknet.layers.checks import parse_enum
from sknet.progress import check_progress_mode


class Optimizer(str, enum.Enum):
    SGD = "sgd"
    ADAMW = "adamw"


class Schedule(str, enum.Enum):
    STEP = "step"  # ÷ gamma every step_epochs (the paper: ÷10 every 30 of 100 epochs)
    COSINE = "cosine"
    CONSTANT = "constant"


class Precision(str, enum.Enum):
    FP32 = "fp32"
    BF16 = "bf16"  # autocast; on CPU and CUDA
    FP16 = "fp16"  # autocast with a gradient scaler; CUDA only


# What a resumed run may change: how long it runs, where and how it reads data and reports, and on which
# device. Everything else (model, data, optimisation, precision, seed) is the run's and stays as saved.
RESUME_CHANGEABLE = frozenset(
    {
        "epochs",
        "max_steps",
        "output",
        "data_dir",
        "workers",
        "device",
        "threads",
        "compile",
        "progress",
        "tensorboard",
        "step_log_every",
        "eval_every",
        "checkpoint_every",
        "bad_images",
        "download",
    }
)


@dataclass
class TrainConfig:
    # model
    model: str = "sknet_tiny"
    model_options: dict[str, Any] = field(default_factory=dict)
    # data
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    download: bool = False
    image_size: int = 224  # folder datasets only; in-memory datasets keep their native size
    crop_padding: int | None = None  # in-memory datasets: random-crop padding (None: dataset recipe; 0: off)
    hflip: bool = True  # in-memory datasets: random horizontal flips
    workers: int = 4  # folder datasets only
    bad_images: str = "skip"  # folder datasets: "skip" (count, warn) or "raise"
    # optimisation
    epochs: int = 10
    batch_size: int = 128  # per process
    optimizer: Optimizer = Optimizer.SGD
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    no_decay_bn_bias: bool = False
    schedule: Schedule = Schedule.COSINE
    step_epochs: int = 30
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    accum_steps: int = 1
    grad_clip: float | None = None
    # execution
    precision: Precision = Precision.FP32
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    threads: int | None = None
    # records
    output: str = "runs/train"
    eval_every: int = 1
    checkpoint_every: int = 1
    tensorboard: bool = False
    progress: str = "auto"  # "auto" (bar on a terminal, else a plain line a minute), "always", "never"
    step_log_every: int = 0  # > 0: append the (rank-averaged) loss of every n-th step to steps.jsonl
    max_steps: int | None = None  # stop after this many optimizer steps (smoke tests)

    def __post_init__(self) -> None:
        self.optimizer = parse_enum(Optimizer, self.optimizer, "optimizer")
        self.schedule = parse_enum(Schedule, self.schedule, "schedule")
        self.precision = parse_enum(Precision, self.precision, "precision")
        for name in (
            "epochs",
            "batch_size",
            "accum_steps",
            "step_epochs",
            "eval_every",
            "checkpoint_every",
            "image_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr", "weight_decay", "momentum", "label_smoothing", "warmup_epochs", "gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
            setattr(self, name, float(value))
        if self.crop_padding is not None and (
            isinstance(self.crop_padding, bool) or not isinstance(self.crop_padding, int) or self.crop_padding < 0
        ):
            raise ConfigError(f"crop_padding must be a non-negative integer, got {self.crop_padding!r}")
        if self.label_smoothing >= 1:
            raise ConfigError(f"label_smoothing must be < 1, got {self.label_smoothing}")
        if self.bad_images not in ("skip", "raise"):
            raise ConfigError(f"bad_images must be 'skip' or 'raise', got {self.bad_images!r}")
        check_progress_mode(self.progress)
        if not isinstance(self.model_options, dict):
            raise ConfigError(f"model_options must be a mapping, got {self.model_options!r}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=_plain))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
        try:
            return cls(**values)
        except TypeError as err:
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def load(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Read a YAML (.yaml/.yml) or TOML (.toml) file, then apply `overrides`."""
        return cls.from_dict({**read_config_file(path), **(overrides or {})}, source=str(path))


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        values = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot parse {path}: {err}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of option names to values")
    return values


def _plain(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return str(value)
