"""`sknet eval`: top-1/top-5 error by the paper's single-centre-crop protocol."""

from __future__ import annotations

import argparse
import json

from sknet.cli.options import add_json_arg, add_progress_arg, add_run_args, checked
from sknet.deploy.onnx_model import load_model
from sknet.errors import ConfigError, DataError
from sknet.train.config import CHECKS


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("eval", help="top-1/top-5 error of trained weights", description=__doc__)
    parser.add_argument(
        "--weights",
        required=True,
        help="model.safetensors, checkpoint.pt, or an exported .onnx, .pt2 or TorchScript file (fp32 or int8)",
    )
    parser.add_argument("--model", help="model name (default: the one recorded in the weights)")
    parser.add_argument("--dataset", help="dataset (default: the one recorded in the weights)")
    parser.add_argument("--data-dir", help="data folder")
    parser.add_argument(
        "--resolution",
        type=checked(CHECKS["image_size"], "--resolution"),
        nargs="+",
        help="image folders and shards: crop sizes, e.g. 224 320 (resize shorter side to size/0.875); data sets "
        "held as tensors (fashion_mnist, cifar10, ...) have one size",
    )
    add_run_args(parser, batch_size=100)
    add_json_arg(parser)
    add_progress_arg(parser)
    parser.set_defaults(run=run)


def check_fit(weights: str, model, dataset: str, classes: int | None, channels: int | None, size=None) -> None:
    """DataError (exit 3) when the data's classes, channels or image side (None: not known yet) are not
    the model's (the side: for an exported file that runs at one size only)."""
    own = getattr(model, "num_classes", None)
    if classes is not None and own is not None and own != classes:
        raise DataError(f"{weights} is a {own}-class model but {dataset} has {classes} classes")
    takes = model.data_config.in_chans
    if channels is not None and channels != takes:
        raise DataError(f"{weights} takes {takes}-channel images but {dataset} has {channels}-channel images")
    fixed = getattr(model, "fixed_size", None)
    if size is not None and fixed is not None and size != fixed:
        raise DataError(f"{weights} was exported for {fixed}×{fixed} images but {dataset} holds {size}×{size} images")


def run(args: argparse.Namespace) -> int:
    from sknet.data.datasets import data_shape, dataset_spec
    from sknet.data.loader import LoaderOptions, build_loader
    from sknet.evaluate import evaluate
    from sknet.train.distributed import resolve_device

    model = load_model(args.weights, args.model)  # weights, a checkpoint or an exported .onnx (fp32 or int8)
    name, meta = model.weights_meta["model"], model.weights_meta
    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise ConfigError(f"{args.weights} does not record its dataset: pass --dataset")
    check_fit(args.weights, model, dataset, *data_shape(dataset, args.data_dir, "test"))  # before reading it
    fixed = getattr(model, "fixed_size", None)
    if fixed is not None and any(size != fixed for size in args.resolution or []):
        raise ConfigError(
            f"{args.weights} runs at {fixed}×{fixed} (its export's size): --resolution {fixed}, or export at another "
            "size (sknet export --resolution N)"
        )
    in_memory = dataset_spec(dataset).in_memory
    if in_memory and args.resolution and len(set(args.resolution)) > 1:
        raise ConfigError(
            f"{dataset} is held as tensors of one size: one --resolution at most (image folders and shards, "
            "decoded per image, evaluate several)"
        )
    device = resolve_device(args.device)
    model = model.to(device)
    results = []
    for size in dict.fromkeys(args.resolution or [model.data_config.input_size]):  # each size once
        # Decoded images are prepared as the model's record says (channels, statistics, crop fraction,
        # interpolation), as `sknet predict` prepares an image.
        options = LoaderOptions(args.batch_size, image_size=size, workers=args.workers, record=model.data_config)
        loader = build_loader(dataset, "test", options, device, args.data_dir)
        record = loader.info.record
        if in_memory and args.resolution and record.input_size != size:
            raise ConfigError(
                f"{dataset} holds {record.input_size}×{record.input_size} images: --resolution {size} cannot apply"
            )
        check_fit(args.weights, model, dataset, len(record.classes), record.in_chans, record.input_size)
        result = evaluate(model, loader, device, progress=args.progress)
        results.append({"resolution": loader.info.record.input_size, **result})
    if args.json:
        print(json.dumps([{"model": name, "dataset": dataset, **r} for r in results], indent=2))
    else:
        for r in results:
            print(
                f"{name} on {dataset} @ {r['resolution']}: top-1 error {100 * (1 - r['acc1']):.2f}%  top-5 error "
                f"{100 * (1 - r['acc5']):.2f}%  (top-1 accuracy {100 * r['acc1']:.2f}%, {r['images']} images"
                + (f", {r['skipped']} unreadable images skipped)" if r["skipped"] else ")")
            )
    return 0
