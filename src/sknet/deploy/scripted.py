"""A TorchScript export (fp32, or int8 from ``sknet export --format torchscript --quantize int8``) behind the
interface of a model from :func:`sknet.create_model`, as :class:`sknet.deploy.onnx_model.OnnxModel` is for
ONNX files: called on a float tensor (N, C, H, W) it returns logits, and it carries the file's preprocessing
record (``sknet.json``) as ``data_config`` and ``weights_meta``."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch

from sknet.deploy.exported import ExportedModel
from sknet.errors import CheckpointError, one_line


def is_torchscript(path: str | Path) -> bool:
    """Whether `path` is a TorchScript archive (a zip with compiled code), not a ``torch.save`` checkpoint."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


class ScriptedModel(ExportedModel):
    """``torch.jit.load`` of `path` on the CPU (quantized kernels are the CPU's). Raises CheckpointError for a
    file without the preprocessing record sknet writes or with invalid JSON in it."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        path = Path(path)
        extra = {"sknet.json": "", "quantization.json": ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation (torch 2.14)
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as err:  # torch.jit raises RuntimeError and its own types for unreadable archives
            raise CheckpointError(f"{one_line(path)} is not a TorchScript file: {one_line(err)}") from None
        self.read_records(path, extra["sknet.json"], extra["quantization.json"])
        # Not a submodule: Module.to(device) would try to move the quantized (CPU-only) packed weights.
        object.__setattr__(self, "module", module)
        self.num_classes = len(self.data_config.classes or ()) or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self.module(x.detach().to("cpu", torch.float32))
        return logits.to(x.device)
