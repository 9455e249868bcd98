"""The training options, each declared once: its type and default (the dataclass field), what it must be
(a :class:`~sknet.train.check.Check`), its help line, whether a resumed run may change it, and which kind of
data uses it. The validation, the YAML/TOML keys, the ``sknet train`` flags and their ``--help``, and the
resume policy are all derived from these declarations.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from sknet.data.augment import AUTO_AUGMENT_HELP, is_auto_augment
from sknet.data.loader import default_workers
from sknet.enums import TextEnum
from sknet.errors import ConfigError
from sknet.progress import PROGRESS_MODES
from sknet.train.check import Check, integer, number, plain_value
from sknet.train.config_file import read_config_file

__all__ = ["CHECKS", "HELP", "RESUME_CHANGEABLE", "TrainConfig", "option", "read_config_file"]


class Optimizer(TextEnum):
    SGD = "sgd"
    ADAMW = "adamw"


class Schedule(TextEnum):
    STEP = "step"  # ÷ gamma every step_epochs (the paper: ÷10 every 30 of 100 epochs)
    COSINE = "cosine"
    CONSTANT = "constant"


class Precision(TextEnum):
    FP32 = "fp32"
    BF16 = "bf16"  # autocast; on CPU and CUDA
    FP16 = "fp16"  # autocast with a gradient scaler; CUDA only


# torch.compile's modes ("reduce-overhead" captures the step's kernels in CUDA graphs on GPUs).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # those of them that capture CUDA graphs on a GPU
# Which weights model.safetensors holds when the run ends: the trained ones, their EMA, or whichever of the
# two scored the better test top-1 in the last evaluation.
WEIGHTS_FROM = ("raw", "ema", "better")


def option(default: Any, check: Check, help: str, *, factory: bool = False, resume: bool = False, only: str = ""):
    """One training option: `default` (`factory`: a callable making it), the `check` its values pass, the
    `help` line of its flag, `resume`: a resumed run may change it (how long and where a run goes, how it
    reads data and reports; everything else is the run's and stays as saved), `only`: "folder" or
    "in_memory", the one kind of data that uses it."""
    meta = {"check": check, "help": help, "resume": resume, "only": only}
    if factory:
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Typed training configuration: defaults ← a YAML/TOML file ← command-line flags; saved with each run."""

    # model
    model: str = option("sknet_tiny", Check(str), "registered model name (see `sknet profile` / sknet.list_models())")
    model_options: dict[str, Any] = option(  # noqa: RUF009 (a field(), with its check and help)
        dict,
        Check(dict),
        "builder options (use --branches, --aggregation, --set KEY=VALUE)",
        factory=True,
    )
    init_weights: str | None = option(
        None,
        Check(str, optional=True),
        "start a new run from these weights (model.safetensors of a run, a converted or any state-dict file):"
        " the classifier is re-initialised for another class count, the first conv adapted to the data's "
        "channels",
    )
    # data
    dataset: str = option(
        "fashion_mnist",
        Check(str),
        "fashion_mnist, fashion_mnist_multiscale, fashion_mnist_canvas (and their _half: 28×28 canvases), cifar10,"
        " cifar100, imagefolder, wds "
        "(WebDataset shards), synthetic",
    )
    data_dir: str | None = option(
        None,
        Check(str, optional=True),
        "data folder (Fashion-MNIST: defaults to Debian's /usr/share/datasets/fashion-mnist; wds: a folder of"
        " shards or a pattern 'DIR/train-{000000..000127}.tar')",
        resume=True,
    )
    download: bool = option(False, Check(bool), "let torchvision download the dataset if it is missing", resume=True)
    image_size: int = option(
        224,
        integer(8, 4096),
        "folder datasets: training and evaluation crop size in pixels",
        only="folder",
    )
    crop_padding: int | None = option(
        None,
        integer(0, 1024, optional=True),
        "in-memory datasets: random-crop padding in pixels (default: the dataset's recipe; 0: off)",
        only="in_memory",
    )
    hflip: bool = option(True, Check(bool), "in-memory datasets: random horizontal flips", only="in_memory")
    workers: int = option(
        default_workers,
        integer(0, 256),
        "folder datasets: processes decoding images (0: in the training process)",
        factory=True,
        resume=True,
        only="folder",
    )
    bad_images: str = option(
        "skip",
        Check(str, choices=("skip", "raise")),
        "folder datasets: skip unreadable images (counted) or raise naming the file",
        resume=True,
        only="folder",
    )
    # optimisation
    epochs: int = option(10, integer(1, 1_000_000), "epochs to train", resume=True)
    batch_size: int = option(128, integer(1, 1_000_000), "images per process per step")
    optimizer: Optimizer = option(Optimizer.SGD, Check(Optimizer), "SGD with momentum, or AdamW")  # noqa: RUF009 (a field(), with its check and help)
    lr: float = option(0.1, number(0, 100, open_low=True), "peak learning rate (after warmup)")
    momentum: float = option(0.9, number(0, 1, open_high=True), "SGD momentum (AdamW: beta1)")
    nesterov: bool = option(False, Check(bool), "Nesterov momentum (SGD)")
    weight_decay: float = option(1e-4, number(0, 1), "L2 weight decay (decoupled for AdamW)")
    no_decay_bn_bias: bool = option(
        False,
        Check(bool),
        "exclude BN weights and biases from weight decay (--decay-bn-bias: include them)",
    )
    schedule: Schedule = option(  # noqa: RUF009 (a field(), with its check and help)
        Schedule.COSINE,
        Check(Schedule),
        "step (÷gamma every --step-epochs), cosine or constant, after --warmup-epochs",
    )
    step_epochs: int = option(30, integer(1, 1_000_000), "step schedule: epochs between learning-rate drops")
    gamma: float = option(0.1, number(0, 1, open_low=True), "step schedule: factor of each drop")
    warmup_epochs: float = option(0.0, number(0, 1_000_000), "linear warmup from 0, in epochs (fractions allowed)")
    label_smoothing: float = option(0.0, number(0, 1, open_high=True), "label smoothing of the cross-entropy loss")
    adamw_beta2: float = option(0.999, number(0, 1, open_high=True), "AdamW: beta2 (torch's and timm's default 0.999)")
    accum_steps: int = option(1, integer(1, 1_000_000), "micro-batches whose gradients make one optimizer step")
    grad_clip: float | None = option(
        None,
        number(0, None, open_low=True, optional=True),
        "clip the gradients' global norm to this value",
    )
    # the modern recipe (timm's options and meanings): sknet.train.recipe
    mixup: float = option(
        0.0,
        number(0, 100),
        "MixUp with Beta(α, α) mixing weights, α this value (timm's --mixup; 0: off)",
    )
    cutmix: float = option(
        0.0,
        number(0, 100),
        "CutMix with Beta(α, α) area ratios, α this value (timm's --cutmix; 0: off)",
    )
    mixup_prob: float = option(1.0, number(0, 1), "probability of applying MixUp/CutMix to a batch")
    mixup_switch_prob: float = option(
        0.5,
        number(0, 1),
        "with both --mixup and --cutmix: probability of CutMix for a batch",
    )
    auto_augment: str | None = option(
        None,
        Check(str, optional=True, valid=is_auto_augment, form=AUTO_AUGMENT_HELP),
        "per-image augmentation policy (torchvision's RandAugment/TrivialAugmentWide/AutoAugment)",
    )
    random_erase: float = option(
        0.0,
        number(0, 1),
        "probability of erasing a random rectangle of each image (RandomErasing, noise fill)",
    )
    aug_repeats: int = option(
        0,
        integer(0, 64),
        "repeated augmentation (timm's --aug-repeats, for DDP): each image N times per epoch order, its "
        "copies on different processes (0, 1: off)",
    )
    ema_decay: float | None = option(
        None,
        number(0, 1, open_low=True, open_high=True, optional=True),
        "keep an EMA of the weights with this decay, updated every step and evaluated beside them",
    )
    ema_warmup: bool = option(
        False,
        Check(bool),
        "timm's EMA warmup: the decay grows as 1 − (1 + step)^(−2/3) up to --ema-decay",
    )
    weights_from: str = option(
        "raw",
        Check(str, choices=WEIGHTS_FROM),
        "model.safetensors holds the raw weights, the EMA, or the better of the two (last test top-1)",
        resume=True,
    )
    # execution
    precision: Precision = option(  # noqa: RUF009 (a field(), with its check and help)
        Precision.FP32,
        Check(Precision),
        "fp32, bf16 (autocast on CPU/CUDA) or fp16 (CUDA, with a gradient scaler)",
    )
    channels_last: bool = option(False, Check(bool), "NHWC memory layout (faster convolutions on recent GPUs and CPUs)")
    compile: bool = option(False, Check(bool), "torch.compile the model", resume=True)
    compile_mode: str = option(
        "default",
        Check(str, choices=COMPILE_MODES),
        "with --compile: torch.compile's mode (reduce-overhead: CUDA graphs on GPUs)",
        resume=True,
    )
    sync_bn: bool = option(False, Check(bool), "synchronise BatchNorm statistics across processes (CUDA)")
    device: str = option(
        "auto",
        Check(str),
        "auto (CUDA if present, else CPU), cpu, cuda or cuda:N; under torchrun rank r uses cuda:r",
        resume=True,
    )
    seed: int = option(0, integer(0, 2**63 - 1), "seed of initial weights, data order and augmentation")
    deterministic: bool = option(
        False,
        Check(bool),
        "deterministic algorithms (exact resume and repeatability; slower on GPUs)",
    )
    threads: int | None = option(
        None,
        integer(1, 4096, optional=True),
        "CPU threads per process (default: torch's choice; under torchrun the machine's cores ÷ its processes)",
        resume=True,
    )
    # records
    output: str = option(
        "runs/train",
        Check(str),
        "run folder: config, logs, checkpoint.pt, model.safetensors, curves.png",
        resume=True,
    )
    eval_every: int = option(1, integer(1, 1_000_000), "evaluate every N epochs (and after the last)", resume=True)
    checkpoint_every: int = option(
        1,
        integer(1, 1_000_000),
        "checkpoint every N epochs (and after the last)",
        resume=True,
    )
    tensorboard: bool = option(
        False,
        Check(bool),
        "also log to TensorBoard (needs the tensorboard package: pip install 'sknet[tensorboard]')",
        resume=True,
    )
    progress: str = option(
        "auto",
        Check(str, choices=PROGRESS_MODES),
        "progress display: auto (a bar on a terminal, otherwise a plain line a minute), always, never",
        resume=True,
    )
    step_log_every: int = option(
        0,
        integer(0, 1_000_000_000),
        "append the loss of every N-th step to steps.jsonl (0: off)",
        resume=True,
    )
    max_steps: int | None = option(
        None,
        integer(1, None, optional=True),
        "stop after this many optimizer steps (smoke runs; a checkpoint is saved)",
        resume=True,
    )

    def __post_init__(self) -> None:
        for f in fields(self):  # one validation for flags, files and saved configurations alike
            setattr(self, f.name, f.metadata["check"].apply(f.name, getattr(self, f.name)))

    def optimizer_kwargs(self) -> dict[str, Any]:
        """The options of the chosen torch optimizer, under torch's names (beside the declarations, so that
        an optimizer option is added in this file alone)."""
        if self.optimizer is Optimizer.ADAMW:
            return {"lr": self.lr, "betas": (self.momentum, self.adamw_beta2)}
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov}

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
        unknown = sorted(map(str, set(values) - known))  # a damaged checkpoint's keys need not be text
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


# Derived from the declarations above.
OPTIONS = {f.name: f for f in fields(TrainConfig)}
CHECKS: dict[str, Check] = {name: f.metadata["check"] for name, f in OPTIONS.items()}
HELP: dict[str, str] = {name: f.metadata["help"] for name, f in OPTIONS.items()}
RESUME_CHANGEABLE = frozenset(name for name, f in OPTIONS.items() if f.metadata["resume"])
FOLDER_ONLY = tuple(name for name, f in OPTIONS.items() if f.metadata["only"] == "folder")
IN_MEMORY_ONLY = tuple(name for name, f in OPTIONS.items() if f.metadata["only"] == "in_memory")


def default_of(name: str) -> Any:
    """The declared default of option `name` (a factory's: None, the value depends on the machine)."""
    default = OPTIONS[name].default
    return None if default is MISSING else default
