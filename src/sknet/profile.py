"""Parameters and multiply-accumulates of registered models, counted (not derived from formulas).

Models are built on the ``meta`` device, so even SKNet-101 profiles in about a second and uses no memory;
MACs come from :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products:
what the paper counts) divided by two.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sknet.errors import ConfigError
from sknet.models import create_model, model_info
from sknet.paper import PaperFigures, paper_figures


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on an input of `input_shape` (N, C, H, W)."""
    device = next(model.parameters()).device
    x = torch.empty(input_shape, device=device)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


@dataclass(frozen=True)
class ModelProfile:
    """One row of `sknet profile`."""

    name: str
    overrides: dict[str, object]
    resolution: int
    params: int
    macs: int
    paper_params: float | None
    paper_macs: float | None
    paper_params_conf: str | None = None
    paper_macs_conf: str | None = None
    paper_err: float | None = None  # top-1 error % (CIFAR: CIFAR-10)
    paper_err_conf: str | None = None
    note: str = ""

    @property
    def label(self) -> str:
        if not self.overrides:
            return self.name
        return self.name + "[" + "; ".join(f"{k}={_fmt_value(v)}" for k, v in self.overrides.items()) + "]"

    @property
    def params_diff(self) -> float | None:
        return None if self.paper_params is None else self.params / self.paper_params - 1.0

    @property
    def macs_diff(self) -> float | None:
        return None if self.paper_macs is None else self.macs / self.paper_macs - 1.0

    def to_dict(self) -> dict[str, object]:
        row = asdict(self)
        row["overrides"] = {k: _fmt_value(v) for k, v in self.overrides.items()}
        row.update(label=self.label, params_diff=self.params_diff, macs_diff=self.macs_diff)
        return row


def _fmt_value(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return "+".join(str(v) for v in value)
    return value if isinstance(value, (int, float, bool)) or value is None else str(value)


def profile_model(
    name: str,
    resolution: int | None = None,
    overrides: Mapping[str, object] | None = None,
    paper: Mapping[str, PaperFigures] | None = None,
) -> ModelProfile:
    """Count parameters and MACs of `name` (with `overrides`) at `resolution` (default: native)."""
    overrides = dict(overrides or {})
    info = model_info(name)
    channels, native, _ = info.input_size
    resolution = native if resolution is None else resolution
    if not isinstance(resolution, int) or resolution < 1:
        raise ConfigError(f"resolution must be a positive number of pixels, got {resolution!r}")
    with torch.device("meta"):
        model = create_model(name, **overrides)
    in_chans = int(overrides.get("in_chans", channels))  # type: ignore[call-overload]
    macs = count_macs(model, (1, in_chans, resolution, resolution))
    # The paper's figures hold for the unmodified model at its native resolution only.
    figures = None
    if not overrides and resolution == native:
        figures = paper.get(name) if paper is not None else paper_figures(name)
    return ModelProfile(
        name=name,
        overrides=overrides,
        resolution=resolution,
        params=count_params(model),
        macs=macs,
        paper_params=figures.params if figures else None,
        paper_macs=figures.macs if figures else None,
        paper_params_conf=figures.params_conf if figures else None,
        paper_macs_conf=figures.macs_conf if figures else None,
        paper_err=figures.top1_err if figures else None,
        paper_err_conf=figures.confidence if figures else None,
        note=figures.note if figures else "",
    )


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.2f}%"


def format_table(rows: Iterable[ModelProfile], errors: bool = False) -> str:
    """A plain-text table: counted figures next to the paper's, with relative differences; `errors` adds
    the paper's top-1 error and each row's note."""
    header = ("model", "res", "params", "paper", "Δ", "MACs", "paper", "Δ")
    if errors:
        header = (*header, "paper err", "note")
    lines = [header]
    for r in rows:
        line = (
            r.label,
            str(r.resolution),
            f"{r.params:,}",
            "" if r.paper_params is None else f"{r.paper_params / 1e6:.2f}M" + _conf(r.paper_params_conf),
            _pct(r.params_diff),
            _macs(r.macs, 3),
            "" if r.paper_macs is None else _macs(r.paper_macs, 2) + _conf(r.paper_macs_conf),
            _pct(r.macs_diff),
        )
        if errors:
            line = (*line, "" if r.paper_err is None else f"{r.paper_err:.2f}%" + _conf(r.paper_err_conf), r.note)
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for j, line in enumerate(lines):
        cells = [
            c.ljust(w) if i == 0 or header[i] == "note" else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _macs(value: float, digits: int) -> str:
    """4.463G for ImageNet models, 149.304M for mobile ones, 5.859M for small ones."""
    return f"{value / 1e9:.{digits}f}G" if value >= 1e9 else f"{value / 1e6:.{digits}f}M"


def _conf(confidence: str | None) -> str:
    return " [?]" if confidence == "?" else ""


def to_json(rows: Iterable[ModelProfile]) -> str:
    return json.dumps([r.to_dict() for r in rows], indent=2)
