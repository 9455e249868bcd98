"""An exported ONNX file (fp32 or int8) run by ONNX Runtime behind the interface of a model from
:func:`sknet.create_model`: called on a float tensor (N, C, H, W) it returns logits (N, classes), and it
carries the preprocessing record of its metadata as ``data_config`` and ``weights_meta``, so that
``sknet eval``, ``sknet predict`` and :func:`sknet.evaluate.evaluate` use it as they use weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sknet.deploy.exported import ExportedModel
from sknet.deploy.quantize import session_kwargs
from sknet.errors import CheckpointError, ConfigError, one_line
from sknet.weights import not_a_file


def is_onnx(path: str | Path) -> bool:
    """Whether `path` names an ONNX file (by its suffix, as the exporter writes them)."""
    return str(path).lower().endswith(".onnx")


class OnnxModel(ExportedModel):
    """ONNX Runtime session over `path` (CPU). Raises ConfigError without onnxruntime, CheckpointError for a
    file that does not load or whose metadata lacks or fails the preprocessing record (``sknet`` key)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("running an ONNX file needs onnxruntime: pip install 'sknet[export]'") from None
        path = Path(path)
        if not path.is_file():
            raise not_a_file(path, "exported file", ())
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"], **session_kwargs()
            )
        except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
            raise CheckpointError(f"{one_line(path)} is not a model ONNX Runtime can load: {one_line(err)}") from None
        props = self.session.get_modelmeta().custom_metadata_map
        self.read_records(path, props.get("sknet"), props.get("quantization"))
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        side = graph_input.shape[-1] if len(graph_input.shape) == 4 else None
        self.fixed_size = side if isinstance(side, int) else None
        classes = self.session.get_outputs()[0].shape[1]
        self.num_classes = classes if isinstance(classes, int) else len(self.data_config.classes or ()) or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.detach().to("cpu", torch.float32).contiguous().numpy()
        logits = self.session.run(None, {self.input_name: images})[0]
        return torch.from_numpy(logits).to(x.device)


def load_model(path: str | Path, name: str | None = None) -> nn.Module:
    """What ``sknet eval`` / ``sknet predict`` run: an :class:`OnnxModel` for a ``.onnx`` file, a
    :class:`~sknet.deploy.scripted.ScriptedModel` for a TorchScript export (fp32 or int8), a
    :class:`~sknet.deploy.program.ProgramModel` for a torch.export program (``.pt2``, or an archive of one),
    else ``sknet.create_model(name, weights=path)`` (weights or a checkpoint), in eval mode. ConfigError for
    a model name given with an exported file (the file records its own)."""
    from sknet.deploy.program import ProgramModel, is_program
    from sknet.deploy.scripted import ScriptedModel, is_torchscript

    exported = None
    if is_onnx(path):
        exported = OnnxModel
    elif is_torchscript(path):
        exported = ScriptedModel
    elif is_program(path) or str(path).lower().endswith(".pt2"):
        exported = ProgramModel
    if exported is not None:
        if name:
            raise ConfigError(
                f"a model name does not apply to the exported file {one_line(path)}: it is one model already"
            )
        return exported(path).eval()
    from sknet.models import create_model

    return create_model(name, weights=path).eval()
