"""`sknet train`: train a registered model; flags mirror the keys of the YAML/TOML config file."""

from __future__ import annotations

import argparse
import enum
import types
import typing
from dataclasses import MISSING, fields

from sknet.cli.options import add_model_override_args, model_overrides
from sknet.train.config import TrainConfig, read_config_file

HELP = {
    "model": "registered model name (see `sknet profile` / sknet.list_models())",
    "dataset": (
        "fashion_mnist, fashion_mnist_multiscale, fashion_mnist_canvas, cifar10, cifar100, imagefolder, synthetic"
    ),
    "data_dir": "data folder (Fashion-MNIST: defaults to Debian's /usr/share/datasets/fashion-mnist)",
    "download": "let torchvision download the dataset if it is missing",
    "batch_size": "images per process per step",
    "schedule": "step (÷gamma every --step-epochs), cosine or constant, after --warmup-epochs",
    "no_decay_bn_bias": "exclude BN weights and biases from weight decay",
    "precision": "fp32, bf16 (autocast on CPU/CUDA) or fp16 (CUDA, with a gradient scaler)",
    "bad_images": "folder datasets: skip unreadable images (counted) or raise naming the file",
    "output": "run folder: config, logs, checkpoint.pt, model.safetensors, curves.png",
    "progress": "progress bar: auto (a bar on a terminal, otherwise a plain line a minute), always, never",
    "max_steps": "stop after this many optimizer steps (smoke runs)",
}


def _field_type(annotation: object) -> type:
    hint = typing.get_type_hints(TrainConfig)[annotation] if isinstance(annotation, str) else annotation
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint  # type: ignore[return-value]


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train a model (the main job)", description=__doc__)
    parser.add_argument("--config", help="YAML or TOML file of options; flags given here override it")
    parser.add_argument("--resume", metavar="CHECKPOINT", help="continue exactly from a checkpoint.pt")
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if f.name == "model_options":
            continue
        kind = _field_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help_text = HELP.get(f.name, "") + (f" (default: {getattr(default, 'value', default)})")
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif isinstance(kind, type) and issubclass(kind, enum.Enum):
            parser.add_argument(flag, dest=f.name, choices=[e.value for e in kind], default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text)
    add_model_override_args(parser)
    parser.set_defaults(run=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = read_config_file(args.config) if args.config else {}
    for f in fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None and f.name != "model_options":
            values[f.name] = value
    options = dict(values.get("model_options") or {})
    options.update(model_overrides(args))
    values["model_options"] = options
    return TrainConfig.from_dict(values, source=args.config or "command line")


def run(args: argparse.Namespace) -> int:
    from sknet.train.trainer import train

    config = config_from_args(args)
    summary = train(config, resume=args.resume)
    if "val_acc1" in summary:
        print(
            f"done: {summary['epochs']} epochs in {summary['train_seconds']:.0f} s; test top-1 accuracy "
            f"{100 * summary['val_acc1']:.2f}% (error {100 * (1 - summary['val_acc1']):.2f}%), top-5 "
            f"{100 * summary['val_acc5']:.2f}%; outputs in {summary['output']}"
        )
    return 0
