"""`sknet eval`: top-1/top-5 error by the paper's single-centre-crop protocol."""

from __future__ import annotations

import argparse
import json

import torch

from sknet.cli.options import load_trained_model
from sknet.errors import ConfigError
from sknet.progress import PROGRESS_MODES


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("eval", help="top-1/top-5 error of trained weights", description=__doc__)
    parser.add_argument("--weights", required=True, help="model.safetensors or checkpoint.pt")
    parser.add_argument("--model", help="model name (default: the one recorded in the weights)")
    parser.add_argument("--dataset", help="dataset (default: the one recorded in the weights)")
    parser.add_argument("--data-dir", help="data folder")
    parser.add_argument(
        "--resolution",
        type=int,
        nargs="+",
        help="folder datasets: crop sizes, e.g. 224 320 (resize shorter side to size/0.875)",
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="auto",
        help="auto: a bar on a terminal, otherwise a plain line a minute",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sknet.data.datasets import Split, build_dataset, dataset_spec
    from sknet.data.loader import TensorBatchLoader
    from sknet.train.distributed import resolve_device
    from sknet.train.trainer import evaluate

    model, name, meta = load_trained_model(args.weights, args.model)
    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise ConfigError(f"{args.weights} does not record its dataset: pass --dataset")
    device = resolve_device(args.device)
    model = model.to(device)
    spec = dataset_spec(dataset)
    data = build_dataset(dataset, args.data_dir, Split.TEST)
    results = []
    if spec.in_memory:
        loader = TensorBatchLoader(data, args.batch_size, pad=False)
        results.append({"resolution": data.image_size[1], **evaluate(model, loader, device, progress=args.progress)})
    else:
        from sknet.data.folder import ImageFolderDataset, collate_skipping
        from sknet.data.transforms import eval_transform

        for size in args.resolution or [224]:
            ds = ImageFolderDataset(
                data,
                eval_transform(size, meta.get("mean", (0.485, 0.456, 0.406)), meta.get("std", (0.229, 0.224, 0.225))),
            )
            loader = torch.utils.data.DataLoader(
                ds, args.batch_size, num_workers=args.workers, collate_fn=collate_skipping
            )
            results.append({"resolution": size, **evaluate(model, loader, device, progress=args.progress)})
    if args.json:
        print(json.dumps([{"model": name, "dataset": dataset, **r} for r in results], indent=2))
    else:
        for r in results:
            print(
                f"{name} on {dataset} @ {r['resolution']}: top-1 error {100 * (1 - r['acc1']):.2f}%  top-5 error "
                f"{100 * (1 - r['acc5']):.2f}%  (top-1 accuracy {100 * r['acc1']:.2f}%, {r['images']} images)"
            )
    return 0
