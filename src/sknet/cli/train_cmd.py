"""`sknet train`: train a registered model; flags mirror the keys of the YAML/TOML config file."""

from __future__ import annotations

import argparse
import enum
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from sknet.cli.options import add_model_override_args, model_overrides
from sknet.errors import CheckpointError, ConfigError
from sknet.train.config import CHECKS, RESUME_CHANGEABLE, TrainConfig, read_config_file
from sknet.train.state import read_training_checkpoint
from sknet.weights import previous_path

# One line per option (tests check that every TrainConfig field has one); the allowed values and the
# default are appended from the field's Check.
HELP = {
    "model": "registered model name (see `sknet profile` / sknet.list_models())",
    "model_options": "builder options (use --branches, --aggregation, --set KEY=VALUE)",
    "init_weights": (
        "start a new run from these weights (model.safetensors of a run, a converted or any state-dict file): "
        "the classifier is re-initialised for another class count, the first conv adapted to the data's channels"
    ),
    "dataset": (
        "fashion_mnist, fashion_mnist_multiscale, fashion_mnist_canvas, cifar10, cifar100, imagefolder, synthetic"
    ),
    "data_dir": "data folder (Fashion-MNIST: defaults to Debian's /usr/share/datasets/fashion-mnist)",
    "download": "let torchvision download the dataset if it is missing",
    "image_size": "folder datasets: training and evaluation crop size in pixels",
    "crop_padding": "in-memory datasets: random-crop padding in pixels (default: the dataset's recipe; 0: off)",
    "hflip": "in-memory datasets: random horizontal flips",
    "workers": "folder datasets: processes decoding images (0: in the training process)",
    "bad_images": "folder datasets: skip unreadable images (counted) or raise naming the file",
    "epochs": "epochs to train",
    "batch_size": "images per process per step",
    "optimizer": "SGD with momentum, or AdamW",
    "lr": "peak learning rate (after warmup)",
    "momentum": "SGD momentum (AdamW: beta1)",
    "nesterov": "Nesterov momentum (SGD)",
    "weight_decay": "L2 weight decay (decoupled for AdamW)",
    "no_decay_bn_bias": "exclude BN weights and biases from weight decay (--decay-bn-bias: include them)",
    "schedule": "step (÷gamma every --step-epochs), cosine or constant, after --warmup-epochs",
    "step_epochs": "step schedule: epochs between learning-rate drops",
    "gamma": "step schedule: factor of each drop",
    "warmup_epochs": "linear warmup from 0, in epochs (fractions allowed)",
    "label_smoothing": "label smoothing of the cross-entropy loss",
    "accum_steps": "micro-batches whose gradients make one optimizer step",
    "grad_clip": "clip the gradients' global norm to this value",
    "precision": "fp32, bf16 (autocast on CPU/CUDA) or fp16 (CUDA, with a gradient scaler)",
    "channels_last": "NHWC memory layout (faster convolutions on recent GPUs and CPUs)",
    "compile": "torch.compile the model",
    "compile_mode": "with --compile: torch.compile's mode (reduce-overhead: CUDA graphs on GPUs)",
    "sync_bn": "synchronise BatchNorm statistics across processes (CUDA)",
    "device": "auto (CUDA if present, else CPU), cpu, cuda or cuda:N; under torchrun rank r uses cuda:r",
    "seed": "seed of initial weights, data order and augmentation",
    "deterministic": "deterministic algorithms (exact resume and repeatability; slower on GPUs)",
    "threads": "CPU threads for torch (default: torch's choice)",
    "output": "run folder: config, logs, checkpoint.pt, model.safetensors, curves.png",
    "eval_every": "evaluate every N epochs (and after the last)",
    "checkpoint_every": "checkpoint every N epochs (and after the last)",
    "tensorboard": "also log to TensorBoard (needs the tensorboard package: pip install 'sknet[tensorboard]')",
    "progress": "progress display: auto (a bar on a terminal, otherwise a plain line a minute), always, never",
    "step_log_every": "append the loss of every N-th step to steps.jsonl (0: off)",
    "max_steps": "stop after this many optimizer steps (smoke runs; a checkpoint is saved)",
}


def _field_type(annotation: object) -> type:
    hint = typing.get_type_hints(TrainConfig)[annotation] if isinstance(annotation, str) else annotation
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint  # type: ignore[return-value]


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train a model (the main job)", description=__doc__)
    parser.add_argument("--config", help="YAML or TOML file of options; flags given here override it")
    parser.add_argument(
        "--resume",
        metavar="RUN",
        help="continue a run exactly: its folder or its checkpoint.pt; the run's saved configuration is used "
        f"(options that may change: {', '.join(sorted(RESUME_CHANGEABLE))})",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run even if --output holds one: the old run is moved to OUTPUT.replaced-<time>/",
    )
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if f.name == "model_options":
            continue
        kind = _field_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help_text = f"{HELP[f.name]} ({CHECKS[f.name].describe()}; default: {getattr(default, 'value', default)})"
        if kind is bool:
            # --x sets True and --no-x False; for a field named no_x, --no-x sets True and --x False.
            negative = "--" + f.name[3:].replace("_", "-") if f.name.startswith("no_") else "--no-" + flag[2:]
            parser.add_argument(flag, dest=f.name, action="store_const", const=True, default=None, help=help_text)
            parser.add_argument(negative, dest=f.name, action="store_const", const=False, help=f"turn {flag} off")
        elif isinstance(kind, type) and issubclass(kind, enum.Enum):
            parser.add_argument(flag, dest=f.name, choices=[e.value for e in kind], default=None, help=help_text)
        elif CHECKS[f.name].choices:
            parser.add_argument(flag, dest=f.name, choices=CHECKS[f.name].choices, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text)
    add_model_override_args(parser)
    parser.set_defaults(run=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The configuration: the file's values, then the flags'; when resuming, the run's own configuration."""
    values = read_config_file(args.config) if args.config else {}
    for f in fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None and f.name != "model_options":
            values[f.name] = value
    options = model_overrides(args)
    if args.resume:
        return resumed_config(Path(args.resume), values, options)
    values["model_options"] = {**(values.get("model_options") or {}), **options}
    return TrainConfig.from_dict(values, source=args.config or "command line")


def checkpoint_of(run: Path) -> Path:
    """RUN or RUN/checkpoint.pt → the checkpoint file (checked to exist)."""
    path = run / "checkpoint.pt" if run.is_dir() else run
    if not path.exists() and not previous_path(path).is_file():
        raise CheckpointError(f"no checkpoint to resume: {run} does not exist")
    return path


def resumed_config(run: Path, given: dict, model_options: dict) -> TrainConfig:
    """The run's saved configuration (config.yaml beside the checkpoint, else the one inside it), with the
    given values that may change on resume; any other value that differs is refused, naming it."""
    path = checkpoint_of(run)
    saved_file = path.parent / "config.yaml"
    if saved_file.is_file():
        saved = read_config_file(saved_file)
    else:
        saved = dict(read_training_checkpoint(path).get("config") or {})
    saved["output"] = str(path.parent)  # the run continues where its checkpoint is, wherever it moved
    if model_options:
        given["model_options"] = {**(given.get("model_options") or saved.get("model_options") or {}), **model_options}
    reference = TrainConfig.from_dict(saved, source=str(saved_file)).to_dict()
    requested = TrainConfig.from_dict({**saved, **given}, source="command line").to_dict()
    changed = sorted(k for k in given if k in requested and requested[k] != reference.get(k))
    refused = [k for k in changed if k not in RESUME_CHANGEABLE]
    if refused:
        shown = ", ".join(f"--{k.replace('_', '-')} ({reference.get(k)!r} → {requested[k]!r})" for k in refused)
        raise ConfigError(
            f"cannot change {shown} when resuming {path}: the run was trained with its saved configuration; "
            "start a new run (another --output) to change it"
        )
    return TrainConfig.from_dict({**saved, **given}, source="command line")


def run(args: argparse.Namespace) -> int:
    from sknet.train.trainer import train

    config = config_from_args(args)
    resume = checkpoint_of(Path(args.resume)) if args.resume else None
    summary = train(config, resume=resume, overwrite=args.overwrite)
    if "val_acc1" in summary:
        print(
            f"done: {summary['epochs']} epochs in {summary['train_seconds']:.0f} s; test top-1 accuracy "
            f"{100 * summary['val_acc1']:.2f}% (error {100 * (1 - summary['val_acc1']):.2f}%), top-5 "
            f"{100 * summary['val_acc5']:.2f}%; outputs in {summary['output']}"
        )
    return 0
