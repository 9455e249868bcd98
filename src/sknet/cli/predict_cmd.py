"""`sknet predict`: top-k classes with probabilities for image files."""

from __future__ import annotations

import argparse
import json

from sknet.cli.options import add_json_arg, checked
from sknet.deploy.onnx_model import load_model
from sknet.errors import one_line
from sknet.predict import check_images, predict
from sknet.train.check import integer


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("predict", help="classify images with trained weights", description=__doc__)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format PIL reads)")
    parser.add_argument(
        "--weights",
        required=True,
        help="model.safetensors written by sknet train, or an exported .onnx, .pt2 or TorchScript file (fp32 or int8)",
    )
    parser.add_argument("--model", help="model name (default: the one recorded in the weights)")
    parser.add_argument(
        "--topk", type=checked(integer(1, None), "--topk"), default=5, help="classes to show per image (default: 5)"
    )
    add_json_arg(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_images(args.images)  # a missing name costs no loading and no classified image thrown away
    model = load_model(args.weights, args.model)  # weights or an exported .onnx (fp32 or int8)
    results = predict(model, args.images, args.topk)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            top = ", ".join(f"{one_line(t['class'])} {100 * t['probability']:.1f}%" for t in r["top"])
            print(f"{one_line(r['image'])}: {top}")  # one line per image, whatever its name or class names hold
    return 0
