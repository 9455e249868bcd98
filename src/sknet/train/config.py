"""Typed training configuration: defaults ← a YAML/TOML file ← command-line flags; saved with each run."""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib

from sknet.data.pipeline import default_workers
from sknet.errors import ConfigError
from sknet.progress import PROGRESS_MODES
from sknet.train.check import Check, integer, number, plain_value
from sknet.train.recipe import RECIPE_CHECKS


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
        "compile_mode",
        "progress",
        "tensorboard",
        "step_log_every",
        "eval_every",
        "checkpoint_every",
        "bad_images",
        "download",
        "weights_from",
    }
)


# torch.compile's modes ("reduce-overhead" captures the step's kernels in CUDA graphs on GPUs).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


# Options only one kind of data uses (the other ignores them).
FOLDER_ONLY = ("image_size", "workers", "bad_images")
IN_MEMORY_ONLY = ("crop_padding", "hflip")


# Every field of TrainConfig, with what it must be (tests check that no field is missing here).
CHECKS: dict[str, Check] = {
    "model": Check(str),
    "model_options": Check(dict),
    "init_weights": Check(str, optional=True),
    "dataset": Check(str),
    "data_dir": Check(str, optional=True),
    "download": Check(bool),
    "image_size": integer(8, 4096),
    "crop_padding": integer(0, 1024, optional=True),
    "hflip": Check(bool),
    "workers": integer(0, 256),
    "bad_images": Check(str, choices=("skip", "raise")),
    "epochs": integer(1, 1_000_000),
    "batch_size": integer(1, 1_000_000),
    "optimizer": Check(Optimizer),
    "lr": number(0, 100, open_low=True),
    "momentum": number(0, 1, open_high=True),
    "nesterov": Check(bool),
    "weight_decay": number(0, 1),
    "no_decay_bn_bias": Check(bool),
    "schedule": Check(Schedule),
    "step_epochs": integer(1, 1_000_000),
    "gamma": number(0, 1, open_low=True),
    "warmup_epochs": number(0, 1_000_000),
    "label_smoothing": number(0, 1, open_high=True),
    "accum_steps": integer(1, 1_000_000),
    "grad_clip": number(0, None, open_low=True, optional=True),
    **RECIPE_CHECKS,
    "precision": Check(Precision),
    "channels_last": Check(bool),
    "compile": Check(bool),
    "compile_mode": Check(str, choices=COMPILE_MODES),
    "sync_bn": Check(bool),
    "device": Check(str),
    "seed": integer(0, 2**63 - 1),
    "deterministic": Check(bool),
    "threads": integer(1, 4096, optional=True),
    "output": Check(str),
    "eval_every": integer(1, 1_000_000),
    "checkpoint_every": integer(1, 1_000_000),
    "tensorboard": Check(bool),
    "progress": Check(str, choices=PROGRESS_MODES),
    "step_log_every": integer(0, 1_000_000_000),
    "max_steps": integer(1, None, optional=True),
}


@dataclass
class TrainConfig:
    # model
    model: str = "sknet_tiny"
    model_options: dict[str, Any] = field(default_factory=dict)
    init_weights: str | None = None  # start from these weights (fine-tuning); not a resume
    # data
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    download: bool = False
    image_size: int = 224  # folder datasets only; in-memory datasets keep their native size
    crop_padding: int | None = None  # in-memory datasets: random-crop padding (None: dataset recipe; 0: off)
    hflip: bool = True  # in-memory datasets: random horizontal flips
    workers: int = field(default_factory=default_workers)  # folder datasets only; default: the cores (≤ 8)
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
    # the modern recipe (timm's options and meanings): sknet.train.recipe
    mixup: float = 0.0  # MixUp's Beta(α, α) (0: off)
    cutmix: float = 0.0  # CutMix's Beta(α, α) (0: off)
    mixup_prob: float = 1.0  # probability of mixing a batch at all
    mixup_switch_prob: float = 0.5  # with both on: probability of CutMix for a batch
    auto_augment: str | None = None  # e.g. "rand-m9-mstd0.5", "trivial", "imagenet"
    random_erase: float = 0.0  # probability of erasing a rectangle of each image
    aug_repeats: int = 0  # repeated augmentation: copies of each image in an epoch's order (0, 1: off)
    ema_decay: float | None = None  # weight EMA after every step (e.g. 0.9998), evaluated beside the weights
    ema_warmup: bool = False  # timm's EMA warmup: decay min(ema_decay, 1 − (1 + k)^(−2/3)) at update k
    weights_from: str = "raw"  # model.safetensors: "raw", "ema" or the "better" in the last evaluation
    # execution
    precision: Precision = Precision.FP32
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"  # torch.compile's mode; "reduce-overhead": CUDA graphs
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
        for f in fields(self):  # one validation for flags, files and saved configurations alike
            setattr(self, f.name, CHECKS[f.name].apply(f.name, getattr(self, f.name)))

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=plain_value))

    def save(self, path: str | Path, unused: tuple[str, ...] = ()) -> None:
        """The resolved configuration as YAML; `unused`: options this run's data ignores, named in a comment."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if unused:
            text += f"# not used with this dataset: {', '.join(unused)}\n"
        Path(path).write_text(text)

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


class _YAMLLoader(yaml.SafeLoader):
    """YAML 1.1 reads 1e-4 (no dot) as text; here it is a number, as in YAML 1.2, TOML and Python."""


_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        values = tomllib.loads(text) if path.suffix == ".toml" else yaml.load(text, Loader=_YAMLLoader)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot parse {path}: {err}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of option names to values")
    return values
