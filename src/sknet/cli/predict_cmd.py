"""`sknet predict`: top-k classes with probabilities for image files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from sknet.cli.options import load_trained_model
from sknet.errors import ConfigError, DataError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("predict", help="classify images with trained weights", description=__doc__)
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--weights", required=True, help="model.safetensors written by sknet train")
    parser.add_argument("--model", help="model name (default: the one recorded in the weights)")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def predict(model: torch.nn.Module, meta: dict, paths: list[str], topk: int) -> list[dict]:
    from sknet.data.transforms import eval_transform

    transform = eval_transform(
        int(meta.get("input_size", 224)),
        meta.get("mean", (0.485, 0.456, 0.406)),
        meta.get("std", (0.229, 0.224, 0.225)),
        float(meta.get("crop_fraction", 0.875)),
        int(meta.get("in_chans", 3)),
    )
    classes = meta.get("classes") or [str(i) for i in range(model.num_classes)]
    results = []
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"image {path} does not exist")
        try:
            with Image.open(path) as img:
                x = transform(img.convert("RGB"))[None]
        except (OSError, UnidentifiedImageError, SyntaxError) as err:
            raise DataError(f"cannot read image {path}: {err}") from None
        with torch.no_grad():
            probs = model(x).softmax(1)[0]
        p, idx = probs.topk(min(topk, len(probs)))
        results.append(
            {
                "image": path,
                "top": [
                    {"class": classes[i], "index": int(i), "probability": float(q)}
                    for q, i in zip(p.tolist(), idx.tolist(), strict=True)
                ],
            }
        )
    return results


def run(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise ConfigError(f"--topk must be ≥ 1, got {args.topk}")
    model, _, meta = load_trained_model(args.weights, args.model)
    results = predict(model, meta, args.images, args.topk)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(r["image"] + ": " + ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"]))
    return 0
