"""Deployment export: the fused inference graph (every BN folded) as ONNX, a torch.export program (.pt2) or
TorchScript, with a dynamic batch dimension."""

from __future__ import annotations

import copy
import enum
import warnings
from pathlib import Path

import torch
from torch import nn

from sknet.errors import ConfigError
from sknet.fuse import fuse_for_inference
from sknet.layers.checks import parse_enum


class ExportFormat(str, enum.Enum):
    ONNX = "onnx"
    PT2 = "pt2"  # torch.export's ExportedProgram: the successor of TorchScript
    TORCHSCRIPT = "torchscript"

    @classmethod
    def parse(cls, value: object) -> ExportFormat:
        return parse_enum(cls, value, "format")


def export_model(
    model: nn.Module,
    path: str | Path,
    fmt: str | ExportFormat,
    input_size: tuple[int, int, int],
    opset: int = 18,
) -> Path:
    """Write `model` (a copy, BN folded, eval mode) for inputs (batch, *input_size), any batch size.

    ONNX: input "images", output "logits", dynamic axis 0 (needs the `onnx` and `onnxscript` packages).
    pt2: a ``torch.export`` ExportedProgram; ``torch.export.load(path).module()`` gives a callable module
    that checks its input's channels and size (the batch is free).
    TorchScript: a traced module for ``torch.jit.load`` (torch.jit is deprecated since torch 2.14).
    """
    fmt = ExportFormat.parse(fmt)
    if len(input_size) != 3 or any(int(v) < 1 for v in input_size):
        raise ConfigError(f"input_size must be (channels, height, width) of positive sizes, got {input_size!r}")
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(2, "No such directory", str(path.parent))
    fused = fuse_for_inference(copy.deepcopy(model).cpu().float())
    example = torch.randn(2, *input_size)
    if fmt is ExportFormat.TORCHSCRIPT:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks are constants in a trace
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 marks torch.jit deprecated; still loads
            traced = torch.jit.trace(fused, example, check_trace=False)
            traced.save(str(path))
        return path
    batch = torch.export.Dim("batch", min=1)
    if fmt is ExportFormat.PT2:  # plain torch: no extra packages
        with torch.no_grad():
            program = torch.export.export(fused, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
        return path
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError("ONNX export needs onnx and onnxscript: pip install 'sknet[export]'") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            fused,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    return path
