"""A ``torch.export`` program (``sknet export --format pt2``) behind the interface of a model from
:func:`sknet.create_model`, as :class:`sknet.deploy.onnx_model.OnnxModel` is for ONNX files: called on a float
tensor (N, C, H, W) it returns logits, and it carries the file's preprocessing record (``sknet.json``) as
``data_config`` and ``weights_meta``."""

from __future__ import annotations

import logging
import warnings
import zipfile
from pathlib import Path

import torch

from sknet.deploy.exported import ExportedModel
from sknet.errors import CheckpointError, one_line
from sknet.weights import not_a_file


def is_program(path: str | Path) -> bool:
    """Whether `path` is a torch.export archive (a zip naming its ``archive_format``), not a checkpoint."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/archive_format") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


class ProgramModel(ExportedModel):
    """``torch.export.load`` of `path` on the CPU. Raises CheckpointError for a file that does not load or
    lacks the preprocessing record sknet writes. The program checks its input: channels and size are the
    traced ones (``fixed_size``), the batch is free."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise not_a_file(path, "exported file", ())
        if not is_program(path):
            raise CheckpointError(f"{one_line(path)} is not a torch.export program (a zip archive of one)")
        extra = {"sknet.json": ""}
        # torch.export.load logs a damaged archive's traceback as a warning (the "torch.export" logger) before
        # its own error: the error alone is said, in one line.
        quiet = logging.getLogger("torch.export")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.export's notes on loading (versions, serialization)
                program = torch.export.load(str(path), extra_files=extra)
        except Exception as err:  # torch raises RuntimeError, KeyError, json and zip errors for damaged archives
            reason = one_line(str(err).splitlines()[0] if str(err) else type(err).__name__)
            raise CheckpointError(f"{one_line(path)} is not a torch.export program that loads: {reason}") from None
        finally:
            quiet.setLevel(level)
        self.read_records(path, extra["sknet.json"], None)
        object.__setattr__(self, "module", program.module())  # a graph of CPU constants: not moved by .to()
        self.num_classes = len(self.data_config.classes or ()) or None
        self.fixed_size = self.data_config.input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self.module(x.detach().to("cpu", torch.float32))
        return logits.to(x.device)
