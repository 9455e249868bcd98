"""Top-1 of trained weights in PyTorch, as fp32 ONNX and as int8 ONNX per calibration method, on a test split.

The int8 files are written as ``sknet export --quantize int8`` writes them (``sknet.deploy.quantize``,
calibrated on the dataset's train split, the weights' own preprocessing), and, with ``--all-ops``, also
with every op type ONNX Runtime can quantize (the SK tail's Mul/Sub/Softmax/Where too): the comparison
behind the op types left in float.

    python benchmarks/int8_accuracy.py runs/fm/model.safetensors --data-dir /usr/share/datasets/fashion-mnist
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import sknet
from sknet.data.pipeline import LoaderOptions, build_loader
from sknet.deploy.calibration import DEFAULT_CALIBRATION_SIZE, calibration_images
from sknet.deploy.onnx_model import OnnxModel
from sknet.deploy.quantize import QUANTIZED_OP_TYPES, CalibrationMethod, quantize_export
from sknet.evaluate import evaluate
from sknet.export import export_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--data-dir")
    parser.add_argument("--methods", nargs="+", default=[m.value for m in CalibrationMethod])
    parser.add_argument("--calibration-size", type=int, default=DEFAULT_CALIBRATION_SIZE)
    parser.add_argument("--all-ops", action="store_true", help="also quantize every op type ORT can (minmax)")
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
        variants = [(method, method, QUANTIZED_OP_TYPES) for method in args.methods]
        if args.all_ops:
            variants.append(("minmax, all op types", "minmax", None))
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            export_model(model, fp32, "onnx", (record.in_chans, record.input_size, record.input_size))
            eager, ort32 = top1(model), top1(OnnxModel(fp32, threads=1))
            for label, method, op_types in variants:
                path = Path(tmp) / "int8.onnx"
                quantize_export(model, path, images, source, method, record, op_types=op_types)
                q = top1(OnnxModel(path, threads=1))
                print(
                    f"| {Path(weights).parent.name} | {meta['model']} | {dataset} | {eager:.2f} | {ort32:.2f} | "
                    f"{label} | {q:.2f} | {q - ort32:+.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
