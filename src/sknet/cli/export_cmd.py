"""`sknet export`: the fused inference graph as ONNX, a torch.export program or TorchScript, dynamic batch.

sknet export --weights runs/x/model.safetensors --format onnx --out model.onnx
sknet export --weights runs/x/model.safetensors --format pt2 --out model.pt2   (torch.export.load)
sknet export --model sknet50 --format torchscript --out sknet50.pt      (random weights)
sknet export --weights runs/x/model.safetensors --format onnx --quantize int8 --calibration DIR --out m.int8.onnx
sknet export --weights runs/x/model.safetensors --format torchscript --quantize int8 --calibration DIR --out m.int8.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sknet.cli.int8_export import add_quantize_args, check_quantize_args, run_quantized
from sknet.cli.options import add_progress_arg, checked
from sknet.cli.outputs import add_overwrite_arg, check_outputs
from sknet.data.config import MAX_INPUT_SIZE
from sknet.errors import ConfigError
from sknet.export import MIN_OPSET, ExportFormat, check_onnx_export
from sknet.train.check import integer


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="ONNX / torch.export (.pt2) / TorchScript export (BN folded, dynamic batch)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--weights", help="model.safetensors or checkpoint.pt (default: random weights)")
    parser.add_argument("--model", help="model name (default: the one recorded in the weights)")
    parser.add_argument("--format", choices=[f.value for f in ExportFormat], required=True)
    parser.add_argument("--out", required=True, help="output file")
    parser.add_argument(
        "--resolution",
        type=checked(integer(1, MAX_INPUT_SIZE), "--resolution"),  # what the file's record may say
        help="input side used to trace (default: the model's native)",
    )
    parser.add_argument(
        "--opset",
        type=checked(integer(MIN_OPSET, None), "--opset"),
        default=MIN_OPSET,
        help=f"ONNX opset, {MIN_OPSET} up to the installed onnx package's newest (default: {MIN_OPSET})",
    )
    parser.add_argument("--check", action="store_true", help="run the exported model and compare with PyTorch")
    add_overwrite_arg(parser, "--out")
    add_quantize_args(parser)
    add_progress_arg(parser)  # of the int8 calibration
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from sknet.export import export_model
    from sknet.models import create_model

    check_quantize_args(args)
    outputs = [Path(args.out)] + ([Path(args.out + ".data")] if args.format == ExportFormat.ONNX else [])
    data = [p for p in (args.calibration, args.data_dir) if p and Path(p).is_dir()]
    check_outputs(outputs, "--out", args.overwrite, reads=[args.weights], folders=data)
    if args.format == ExportFormat.ONNX:
        check_onnx_export(args.opset)
    if args.weights:
        model = create_model(args.model, weights=args.weights).eval()
    elif args.model:
        model = create_model(args.model).eval()
    else:
        raise ConfigError("give --weights (trained model) or --model (random weights)")
    name, record = model.weights_meta["model"], model.data_config  # the input the model was trained on
    channels = record.in_chans
    side = record.input_size if args.resolution is None else args.resolution
    if args.quantize:
        return run_quantized(args, model, side)
    written = export_model(model, args.out, args.format, (channels, side, side), args.opset)
    path = written[0]
    print(
        f"wrote {', '.join(map(str, written))} ({args.format}, {name}, input (batch, {channels}, {side}, {side}), "
        "BN folded, preprocessing recorded)"
    )
    if args.check:
        x = torch.randn(3, channels, side, side)
        with torch.no_grad():
            ref = model.eval()(x)
        if args.format == ExportFormat.ONNX:
            try:
                import onnxruntime as ort
            except ImportError:
                raise ConfigError("--check of ONNX needs onnxruntime: pip install onnxruntime") from None
            session = ort.InferenceSession(str(Path(path)), providers=["CPUExecutionProvider"])
            out = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        elif args.format == ExportFormat.PT2:
            with torch.no_grad():
                out = torch.export.load(str(path)).module()(x)
        else:
            out = torch.jit.load(str(path))(x)
        err = ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()
        print(f"check: batch 3, max |difference| / max |logit| = {err:.2e}")
        if err > 1e-4:
            raise ConfigError(f"the exported model differs from PyTorch by {err:.2e} (relative)")
    return 0
