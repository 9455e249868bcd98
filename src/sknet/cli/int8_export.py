"""`sknet export --quantize int8`: the options of the int8 exports (ONNX Runtime's for --format onnx, PyTorch's
x86 int8 for --format torchscript) and their run (see sknet.deploy)."""

from __future__ import annotations

import argparse

from sknet.cli.options import checked
from sknet.errors import ConfigError
from sknet.train.check import Check, integer

CHECK_IMAGES = 256  # calibration images --check runs through both models


def add_quantize_args(parser: argparse.ArgumentParser) -> None:
    from sknet.deploy.calibration import DEFAULT_CALIBRATION_SIZE
    from sknet.deploy.quantize import (
        ACTIVATION_TYPES,
        DEFAULT_ACTIVATIONS,
        DEFAULT_WEIGHT_BITS,
        WEIGHT_CODE_LIMITS,
        CalibrationMethod,
    )

    group = parser.add_argument_group(
        "int8 (static quantization, per-channel weights: ONNX Runtime's QDQ for --format onnx, PyTorch's x86 "
        "FX quantization for --format torchscript)"
    )
    group.add_argument(
        "--quantize", choices=["int8"], help="quantize the onnx or torchscript export (needs --calibration)"
    )
    group.add_argument(
        "--calibration",
        metavar="DATA",
        help="calibration images: a folder of images (searched recursively) or a dataset name (its train split)",
    )
    group.add_argument("--data-dir", help="folder of the --calibration dataset")
    group.add_argument(
        "--calibration-size",
        type=checked(integer(1, None), "--calibration-size"),
        default=DEFAULT_CALIBRATION_SIZE,
        metavar="N",
        help=f"calibration images (default: {DEFAULT_CALIBRATION_SIZE}; a folder's are spread over its sorted "
        "files, a dataset's drawn with a fixed seed)",
    )
    group.add_argument(
        "--calibration-method",
        choices=[m.value for m in CalibrationMethod],
        default=CalibrationMethod.MINMAX.value,
        help="how activation ranges are chosen (default: minmax; percentile: onnx only)",
    )
    group.add_argument(
        "--activations",
        choices=list(ACTIVATION_TYPES),
        default=None,
        help=f"onnx: activation type (default: {DEFAULT_ACTIVATIONS}: what x86's VNNI multiplies, 1.4–2× faster "
        "there); torchscript: uint8 over the full 8-bit range",
    )
    group.add_argument(
        "--weight-bits",
        type=checked(Check(int, min(WEIGHT_CODE_LIMITS), max(WEIGHT_CODE_LIMITS)), "--weight-bits"),
        choices=list(WEIGHT_CODE_LIMITS),
        default=DEFAULT_WEIGHT_BITS,
        help=f"int8 weight codes: {DEFAULT_WEIGHT_BITS} (default: within ±{WEIGHT_CODE_LIMITS[DEFAULT_WEIGHT_BITS]}, "
        "exact on every x86 CPU) or 8 (within ±127: only for CPUs known to have VNNI or AMX, or ARM; on x86 "
        "CPUs without VNNI, e.g. AVX2 ones, the uint8×int8 products saturate and the file silently loses accuracy)",
    )


def check_quantize_args(args: argparse.Namespace) -> None:
    """The int8 options' consistency and onnxruntime's presence: before the model is even loaded."""
    if not args.quantize:
        if args.calibration or args.data_dir:
            raise ConfigError("--calibration and --data-dir apply to --quantize int8 only")
        return
    from sknet.deploy.quantize import DEFAULT_ACTIVATIONS, require_onnxruntime
    from sknet.deploy.quantize_torch import check_torch_method

    if args.format not in ("onnx", "torchscript"):
        raise ConfigError(f"--quantize int8 writes onnx or torchscript, not {args.format}")
    if not args.calibration:
        raise ConfigError("--quantize int8 needs --calibration DATA (a folder of images or a dataset name)")
    if args.format == "onnx":
        require_onnxruntime()
        args.activations = args.activations or DEFAULT_ACTIVATIONS
    else:
        check_torch_method(args.calibration_method)
        if args.activations is not None:
            raise ConfigError("--activations applies to --format onnx; torchscript's are uint8 (PyTorch's x86 engine)")


def run_quantized(args: argparse.Namespace, model, side: int) -> int:
    """Read the calibration images (every check), then export and quantize; print what was written."""
    import dataclasses

    from sknet.deploy.calibration import calibration_images
    from sknet.deploy.onnx_model import load_model
    from sknet.deploy.quantize import quantize_export
    from sknet.deploy.quantize_torch import quantize_torchscript

    record = dataclasses.replace(model.data_config, input_size=side)  # calibrate at the traced size
    images, source = calibration_images(args.calibration, record, args.calibration_size, args.data_dir)
    what = f"{model.weights_meta['model']}, input (batch, {record.in_chans}, {side}, {side}), BN folded"
    calibrated = f"calibrated by {args.calibration_method} on {source}; preprocessing recorded"
    if args.format == "onnx":
        kinds = {"activations": args.activations, "weight_bits": args.weight_bits, "progress": args.progress}
        result = quantize_export(model, args.out, images, source, args.calibration_method, record, args.opset, **kinds)
        kind = f"{args.activations} activations, {args.weight_bits}-bit weights"
        print(f"wrote {args.out} (onnx int8 QDQ, {kind}, {what}, {calibrated})")
        integer, floats = ", ".join(result["quantized_op_types"]), ", ".join(result["float_op_types"])
        print(f"integer op types: {integer}; float: {floats}")
    else:
        result = quantize_torchscript(
            model, args.out, images, source, args.calibration_method, record, args.weight_bits, args.progress
        )
        engine = f"PyTorch's {result['engine']} engine, {args.weight_bits}-bit weights"
        print(f"wrote {args.out} (torchscript int8, {engine}, {what}, {calibrated})")
        print(f"float: {', '.join(result['float_modules'])} (the SK attention)")
    if args.check:
        import torch

        x = torch.from_numpy(images[:CHECK_IMAGES])
        with torch.no_grad():
            ref = model.eval()(x)
        out = load_model(args.out)(x)
        agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
        err = ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()
        print(
            f"check: the first {len(x)} of the {len(images)} calibration images, top-1 agreement with PyTorch "
            f"fp32 {100 * agree:.2f}%, "
            f"max |difference| / max |logit| = {err:.2e} (int8: reported, not bounded)"
        )
    return 0
