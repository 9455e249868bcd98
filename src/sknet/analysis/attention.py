"""Record the select attention of every SK unit under the paper's names, and summarise it.

Units are named ``SK_{stage}_{unit}``, 1-based as in the paper (section 5): stage 1 is the stem (conv1),
so the first stage of bottlenecks is stage 2 and SK_3_4 is the 4th unit of the second bottleneck stage.
A unit that holds several SK convolutions (e.g. both branches of a ShuffleNetV2 down-sampling unit)
names the further ones ``SK_{stage}_{unit}_{k}``, k = 2, 3, ...

Usage::

    with record_attention(model) as rec:
        model(x)
    a = rec.attention("SK_3_4")                  # (N, M, C), rows sum to 1 over M
    d = mean_attention_difference(a)             # (N,): mean over channels of a[:, -1] − a[:, 0]

Hooks exist only inside the ``with`` block: outside it nothing is recorded and nothing costs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from types import TracebackType

import torch
from torch import nn

from sknet.errors import ConfigError
from sknet.layers.selective_kernel import SKConv2d

_UNIT_NAME = re.compile(r"^SK_(\d+)_(\d+)(?:_(\d+))?$")
# Stage numbering of networks that list their stages (`stage_names`): the stem is stage 1.
FIRST_STAGE = 2


def _attention_convs(module: nn.Module) -> list[SKConv2d]:
    """SK convolutions with attention (plain-sum ones have nothing to record), in registration order."""
    return [m for m in module.modules() if isinstance(m, SKConv2d) and m.select is not None]


def _stages(model: nn.Module) -> list[tuple[int, nn.Module]]:
    names = getattr(model, "stage_names", None)
    if names:
        first = int(getattr(model, "first_stage_index", FIRST_STAGE))
        return [(first + i, getattr(model, name)) for i, name in enumerate(names)]
    if isinstance(model, SKConv2d):
        return [(1, nn.Sequential(model))]
    # Any other model: each top-level child holding SK convolutions is a stage, numbered from 1.
    stages = [child for child in model.children() if _attention_convs(child)]
    return [(i + 1, child) for i, child in enumerate(stages)]


def sk_units(model: nn.Module) -> dict[str, SKConv2d]:
    """The model's SK convolutions with attention, by unit name, in forward order of stages and units."""
    units: dict[str, SKConv2d] = {}
    for stage_index, stage in _stages(model):
        blocks = list(stage.children()) if isinstance(stage, nn.Sequential) else [stage]
        for unit_index, block in enumerate(blocks, start=1):
            for k, conv in enumerate(_attention_convs(block), start=1):
                suffix = "" if k == 1 else f"_{k}"
                units[f"SK_{stage_index}_{unit_index}{suffix}"] = conv
    if not units:
        raise ConfigError(
            f"{type(model).__name__} has no SK unit with attention (an SK model with aggregation='sk' is needed)"
        )
    return units


def parse_unit_name(name: str) -> tuple[int, int, int]:
    """'SK_3_4' → (3, 4, 1); 'SK_2_1_2' → (2, 1, 2)."""
    match = _UNIT_NAME.match(name)
    if match is None:
        raise ConfigError(f"{name!r} is not a unit name like 'SK_3_4'")
    stage, unit, k = match.groups()
    return int(stage), int(unit), int(k or 1)


def last_unit_per_stage(names: Iterable[str]) -> list[str]:
    """The paper's choice of units to show (SK_2_3, SK_3_4, SK_4_6, SK_5_3 for SKNet-50)."""
    last: dict[int, str] = {}
    for name in names:
        stage, _, k = parse_unit_name(name)
        if k == 1:
            last[stage] = name
    return [last[s] for s in sorted(last)]


class AttentionRecorder:
    """Context manager recording each unit's attention (N, M, C) for every forward pass inside it.

    Args:
        model: any model holding :class:`SKConv2d` layers.
        units: names to record (default: every unit, see :func:`sk_units`).
        device: where recorded tensors are kept (default CPU; detached; half precision widened to float32).
    """

    def __init__(self, model: nn.Module, units: Iterable[str] | None = None, device: str | torch.device = "cpu"):
        available = sk_units(model)
        if units is None:
            names = list(available)
        else:
            names = list(units)
            unknown = [n for n in names if n not in available]
            if unknown:
                raise ConfigError(f"unknown SK unit(s) {', '.join(unknown)}; this model has {', '.join(available)}")
        self.units = {n: available[n] for n in names}
        self.device = torch.device(device)
        self.records: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            # float16/bfloat16 (autocast) are widened; float32/float64 kept as they are
            dtype = output.dtype if output.dtype in (torch.float32, torch.float64) else torch.float32
            self.records[name].append(output.detach().to(self.device, dtype))

        return hook

    def __enter__(self) -> AttentionRecorder:
        if self._handles:
            raise RuntimeError("this AttentionRecorder is already active")
        for name, conv in self.units.items():
            self._handles.append(conv.select.register_forward_hook(self._hook(name)))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def attention(self, name: str) -> torch.Tensor:
        """All attention recorded for unit `name`, concatenated over forward passes: (N, M, C)."""
        if name not in self.records:
            raise ConfigError(f"unit {name!r} is not recorded; recorded: {', '.join(self.records)}")
        chunks = self.records[name]
        if not chunks:
            conv = self.units[name]
            return torch.empty(0, conv.num_paths, conv.out_channels)
        return torch.cat(chunks)

    def pop(self) -> dict[str, torch.Tensor]:
        """Every unit's attention (N, M, C) recorded so far; the records are cleared."""
        out = {name: self.attention(name) for name in self.records}
        self.clear()
        return out

    def clear(self) -> None:
        for chunks in self.records.values():
            chunks.clear()


def record_attention(
    model: nn.Module, units: Iterable[str] | None = None, device: str | torch.device = "cpu"
) -> AttentionRecorder:
    """``with record_attention(model) as rec: model(x)`` — see :class:`AttentionRecorder`."""
    return AttentionRecorder(model, units, device)


def _check_attention(attention: torch.Tensor) -> None:
    if attention.dim() != 3 or attention.shape[1] < 2:
        raise ConfigError(f"expected attention shaped (N, M, C) with M ≥ 2 paths, got {tuple(attention.shape)}")


def mean_attention_difference(attention: torch.Tensor, large: int = -1, small: int = 0) -> torch.Tensor:
    """(N, M, C) → (N,): mean over channels of the attention on path `large` minus that on path `small`.

    With the paper's paths (3×3, then the dilated "5×5") the defaults give "5×5 minus 3×3".
    """
    _check_attention(attention)
    return (attention[:, large] - attention[:, small]).mean(dim=1)


def channel_profile(attention: torch.Tensor, path: int = -1, group: int = 16) -> torch.Tensor:
    """(N, M, C) → (N, ⌈C / group⌉): attention on `path` averaged over each run of `group` successive
    channels (Figure 3 of the paper averages 16). A last, shorter run is averaged as it is."""
    _check_attention(attention)
    if group < 1:
        raise ConfigError(f"group must be ≥ 1, got {group}")
    values = attention[:, path]
    return torch.stack([chunk.mean(dim=1) for chunk in values.split(group, dim=1)], dim=1)
