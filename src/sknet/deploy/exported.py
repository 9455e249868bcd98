"""What an exported file run as a model shares, ONNX (:mod:`sknet.deploy.onnx_model`), TorchScript
(:mod:`sknet.deploy.scripted`) or a torch.export program (:mod:`sknet.deploy.program`): the records it
carries, and the interface of a model from :func:`sknet.create_model` built on them (``data_config``,
``weights_meta``, ``precision``)."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from sknet.data.config import DataConfig
from sknet.errors import CheckpointError, one_line


class ExportedModel(nn.Module):
    """What an exported file run as a model shares, ONNX, TorchScript or torch.export: its records, read by
    :meth:`read_records` from the two JSON texts the file carries (``sknet``: the preprocessing record,
    required; ``quantization``: present in int8 files). `fixed_size`: the input side the file runs at, where
    it checks it (ONNX graphs with static sizes, torch.export programs), else None (a TorchScript trace)."""

    fixed_size: int | None = None

    def read_records(self, path: Path, meta_text: str | None, quantization_text: str | None) -> None:
        """Set ``data_config``, ``weights_meta``, ``quantization``, ``in_chans`` and ``path``; CheckpointError
        for a missing preprocessing record or invalid JSON in either."""
        if not meta_text:
            raise CheckpointError(f"{one_line(path)} has no preprocessing record (export it with sknet export)")
        try:
            meta = json.loads(meta_text)
            self.quantization = json.loads(quantization_text) if quantization_text else None
        except json.JSONDecodeError:
            raise CheckpointError(f"{one_line(path)}: its metadata is not valid JSON") from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"{one_line(path)}: its metadata is not a record")
        self.data_config = DataConfig.from_metadata(meta, one_line(path))
        self.weights_meta = {**meta, **self.data_config.to_metadata()}
        self.in_chans = self.data_config.in_chans
        self.path = path

    @property
    def precision(self) -> str:
        """ "int8" for a quantized file, else "fp32"."""
        return (self.quantization or {}).get("dtype", "fp32")
