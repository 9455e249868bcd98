"""Top-1 of trained weights in PyTorch, as fp32 ONNX and as int8 ONNX per calibration method, on a test split.

The int8 files are written as ``sknet export --quantize int8`` writes them (``sknet.deploy.quantize``,
calibrated on the dataset's train split, the weights' own preprocessing): each calibration method with
the default uint8 activations, and MinMax with int8 activations; with ``--all-ops``, also with every op
type ONNX Runtime can quantize (the SK tail's nodes still float: ``float_sk_tail``); and PyTorch's own x86
int8 as ``sknet export --format torchscript --quantize int8`` writes it (``sknet.deploy.quantize_torch``).

    python benchmarks/int8_accuracy.py runs/fm/model.safetensors --data-dir /usr/share/datasets/fashion-mnist
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import sknet
from sknet.data.loader import LoaderOptions, build_loader
from sknet.deploy.calibration import DEFAULT_CALIBRATION_SIZE, calibration_images
from sknet.deploy.onnx_model import OnnxModel
from sknet.deploy.quantize import DEFAULT_ACTIVATIONS, QUANTIZED_OP_TYPES, CalibrationMethod, quantize_export
from sknet.deploy.quantize_torch import quantize_torchscript
from sknet.deploy.scripted import ScriptedModel
from sknet.evaluate import evaluate
from sknet.export import export_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--data-dir")
    parser.add_argument("--methods", nargs="+", default=[m.value for m in CalibrationMethod])
    parser.add_argument("--calibration-size", type=int, default=DEFAULT_CALIBRATION_SIZE)
    parser.add_argument("--all-ops", action="store_true", help="also quantize every op type ORT can (minmax)")
    parser.add_argument(
        "--formats", nargs="+", choices=["onnx", "torchscript"], default=["onnx", "torchscript"], help="int8 files"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # PyTorch and ONNX Runtime alike: a shared machine (see int8.py)
    print("| weights | model | dataset | PyTorch | ORT fp32 | int8 variant | int8 top-1 | int8 − fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for weights in args.weights:
        model = sknet.create_model(weights=weights).eval()
        meta, record = model.weights_meta, sknet.data_config(model)
        dataset = meta["dataset"]
        loader = build_loader(dataset, "test", LoaderOptions(200, image_size=record.input_size), "cpu", args.data_dir)

        def top1(m, loader=loader) -> float:
            return 100 * evaluate(m, loader, "cpu")["acc1"]

        images, source = calibration_images(dataset, record, args.calibration_size, args.data_dir)
        variants = []
        if "onnx" in args.formats:
            variants += [(method, method, QUANTIZED_OP_TYPES, DEFAULT_ACTIVATIONS) for method in args.methods]
            variants.append(("minmax, int8 activations", "minmax", QUANTIZED_OP_TYPES, "int8"))
            if args.all_ops:
                variants.append(("minmax, all op types", "minmax", None, DEFAULT_ACTIVATIONS))
        if "torchscript" in args.formats:  # PyTorch's x86 int8 (sknet.deploy.quantize_torch)
            variants += [(f"torchscript, {m}", m, "torchscript", None) for m in args.methods if m != "percentile"]
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            export_model(model, fp32, "onnx", (record.in_chans, record.input_size, record.input_size))
            eager, ort32 = top1(model), top1(OnnxModel(fp32, threads=1))
            for label, method, op_types, activations in variants:
                if op_types == "torchscript":
                    path = Path(tmp) / "int8.pt"
                    quantize_torchscript(model, path, images, source, method, record)
                    q = top1(ScriptedModel(path))
                else:
                    path = Path(tmp) / "int8.onnx"
                    kinds = {"op_types": op_types, "activations": activations}
                    quantize_export(model, path, images, source, method, record, **kinds)
                    q = top1(OnnxModel(path, threads=1))
                print(
                    f"| {Path(weights).parent.name} | {meta['model']} | {dataset} | {eager:.2f} | {ort32:.2f} | "
                    f"{label} | {q:.2f} | {q - ort32:+.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
