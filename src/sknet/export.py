"""Deployment export: the fused inference graph (every BN folded) as ONNX, a torch.export program (.pt2) or
TorchScript, with a dynamic batch dimension, each carrying the model's input record (DataConfig: size,
crop, interpolation, mean/std, classes, channel order) so that the file alone says how to feed it.

Where the record goes: ONNX ``metadata_props`` (one key per field, JSON values, plus ``sknet`` with the
whole record); pt2 and TorchScript an extra file ``sknet.json`` (``torch.export.load(path,
extra_files={"sknet.json": ""})``, ``torch.jit.load(path, _extra_files=...)``)."""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from sknet.bn_folding import fuse_for_inference
from sknet.data.config import DataConfig, data_config
from sknet.enums import TextEnum
from sknet.errors import ConfigError, output_folder

ONNX_SINGLE_FILE_LIMIT = 2**31 - 2**26  # protobuf's 2 GB, with room for the graph: above, external data
# torch.onnx's exporter writes opset 18 and converts to later ones; asked for an older one (its converter fails
# on these graphs) or one newer than the installed onnx knows, it writes 18 without a word: both are refused.
MIN_OPSET = 18


class ExportFormat(TextEnum):
    __option__ = "format"
    ONNX = "onnx"
    PT2 = "pt2"  # torch.export's ExportedProgram: the successor of TorchScript
    TORCHSCRIPT = "torchscript"


def export_metadata(model: nn.Module, record: DataConfig) -> dict:
    """What an exported file records beside its graph: the model's name and dataset (from its weights'
    metadata: `sknet eval FILE` evaluates on that dataset) and the input record `record`."""
    recorded = getattr(model, "weights_meta", {})
    return {"model": recorded.get("model"), "dataset": recorded.get("dataset"), **record.to_metadata()}


def check_onnx_export(opset: int) -> None:
    """ConfigError unless ONNX can be written at `opset`: onnx and onnxscript installed, the opset one the
    exporter writes (MIN_OPSET up to the newest the installed onnx knows). Cheap: run before any work."""
    try:
        import onnx
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError("ONNX export needs onnx and onnxscript: pip install 'sknet[export]'") from None
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ConfigError(f"opset {opset} is out of range: {MIN_OPSET}–{newest} (onnx {onnx.__version__} installed)")


def export_model(
    model: nn.Module,
    path: str | Path,
    fmt: str | ExportFormat,
    input_size: tuple[int, int, int],
    opset: int = MIN_OPSET,
    record: DataConfig | None = None,
) -> list[Path]:
    """Write `model` (a copy, BN folded, eval mode) for inputs (batch, *input_size), any batch size; returns
    every file written. `record`: the input record to embed (default: ``sknet.data_config(model)``); its
    ``input_size`` is set to the traced size, so that a consumer following the metadata feeds what the
    graph takes. Raises ConfigError for a non-square size or channels other than the record's.

    ONNX is one self-contained file unless the weights exceed 2 GB (then ``<path>.data`` beside it).
    ONNX: input "images", output "logits", dynamic axis 0 (needs the `onnx` and `onnxscript` packages).
    pt2: a ``torch.export`` ExportedProgram; ``torch.export.load(path).module()`` gives a callable module
    that checks its input's channels and size (the batch is free).
    TorchScript: a traced module for ``torch.jit.load`` (torch.jit is deprecated since torch 2.14).
    """
    fmt = ExportFormat.parse(fmt)
    if fmt is ExportFormat.ONNX:
        check_onnx_export(opset)
    if len(input_size) != 3 or any(int(v) < 1 for v in input_size):
        raise ConfigError(f"input_size must be (channels, height, width) of positive sizes, got {input_size!r}")
    channels, height, width = (int(v) for v in input_size)
    if height != width:
        raise ConfigError(f"input_size must be square (the input record holds one side), got {height}×{width}")
    record = record or data_config(model)
    if channels != record.in_chans:
        raise ConfigError(f"input_size has {channels} channels; the model's input record has {record.in_chans}")
    record = dataclasses.replace(record, input_size=height)  # the metadata describes the graph as traced
    path = Path(path)
    output_folder(path)
    meta = export_metadata(model, record)
    extra = {"sknet.json": json.dumps(meta)}
    fused = fuse_for_inference(copy.deepcopy(model).cpu().float())
    example = torch.randn(2, *input_size)
    if fmt is ExportFormat.TORCHSCRIPT:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks are constants in a trace
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 marks torch.jit deprecated; still loads
            traced = torch.jit.trace(fused, example, check_trace=False)
            traced.save(str(path), _extra_files=extra)
        return [path]
    batch = torch.export.Dim("batch", min=1)
    if fmt is ExportFormat.PT2:  # plain torch: no extra packages
        with torch.no_grad():
            program = torch.export.export(fused, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path), extra_files=extra)
        return [path]
    weight_bytes = sum(t.numel() * t.element_size() for t in fused.state_dict().values())
    external = weight_bytes > ONNX_SINGLE_FILE_LIMIT
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            fused,
            (example,),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    props = {key: json.dumps(value) for key, value in meta.items()}
    props["sknet"] = extra["sknet.json"]
    program.model.metadata_props.update(props)
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)  # a stale one from an earlier export would mislead
    program.save(str(path), external_data=external)
    return [path, data] if external else [path]
