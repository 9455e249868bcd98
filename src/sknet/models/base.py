"""What every sknet classification network shares: option checks, head, initialisation, forward.

A family builds ``self.stem`` and its stages (named in ``self.stage_names``), then calls
:meth:`BottleneckNet.build_head`. (N, in_chans, H, W) → logits (N, num_classes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from sknet.errors import ConfigError
from sknet.layers import BlockConfig, Bottleneck
from sknet.layers.checks import check_image_batch, check_positive_int
from sknet.models.pretrained_cfg import data_config_from_pretrained_cfg, pretrained_cfg


def init_weights(model: nn.Module, classifier_std: float = 0.01) -> None:
    """MSRA init for convs, BN to identity, classifier N(0, std²) with zero bias (paper section 4.1)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, classifier_std)
            nn.init.zeros_(module.bias)


# Builder options that belong to the bottleneck (BlockConfig's fields) rather than to the network.
BLOCK_FIELDS = BlockConfig.option_names()
SK_FIELDS = BlockConfig.sk_fields()  # the options every SK network takes


def build_block_config(block: BlockConfig, kwargs: dict[str, object]) -> tuple[BlockConfig, dict[str, object]]:
    """Split builder `kwargs` into bottleneck fields (applied to `block`) and network options."""
    network = dict(kwargs)
    changes = {k: network.pop(k) for k in BLOCK_FIELDS if k in network}
    return block.replace(**changes), network


# torch.jit.script calls __prepare_scriptable__ first: one line instead of an error deep in TorchScript.
NOT_SCRIPTABLE = (
    "sknet models are not TorchScript-scriptable (the SK layer chooses its implementation from the input's "
    "device and dtype): export with `sknet export --format pt2` (torch.export), or `--format torchscript` "
    "(a trace), or use torch.fx"
)


class BottleneckNet(nn.Module):
    """Base of every family: ResNeXt / SENet / SKNet, CIFAR, ShuffleNetV2, MobileNetV2.

    Besides ``forward`` it has timm's model interface, so timm's and torchvision's tools work on it:
    ``pretrained_cfg`` / ``default_cfg`` (derived from ``data_config``), ``get_classifier``,
    ``reset_classifier``, ``forward_features``, ``forward_head(pre_logits=)``, ``forward_intermediates``,
    ``group_matcher`` (layer-wise lr decay) and ``set_grad_checkpointing``.
    """

    stem: nn.Module
    stage_names: list[str]
    head_conv: nn.Module | None

    def __init__(self, num_classes: int, in_chans: int, drop_rate: float, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        for name, rate in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {rate!r}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = float(drop_rate)
        self.drop_path_rate = float(drop_path_rate)
        self.stage_names = []
        self.head_conv = None  # a last 1×1 conv before pooling (ShuffleNetV2 conv5, MobileNetV2)
        self.feature_info: list[dict[str, object]] = []
        self.grad_checkpointing = False

    def block_drop_path(self, index: int, total: int) -> float:
        """The stochastic-depth rate of bottleneck `index` (0-based) of `total`: linear over depth from 0 for
        the first to `drop_path_rate` for the last (Huang et al. 2016; timm's ResNets:
        drop_path_rate · index / (total − 1))."""
        return self.drop_path_rate * index / max(total - 1, 1)

    def add_stage(self, stage: nn.Sequential, out_channels: int, reduction: int) -> None:
        name = f"layer{len(self.stage_names) + 1}"
        self.add_module(name, stage)
        self.stage_names.append(name)
        self.feature_info.append({"num_chs": out_channels, "reduction": reduction, "module": name})

    def build_head(self, in_channels: int, zero_init_last_bn: bool) -> None:
        """Global pool → dropout → fc, then initialise every weight."""
        self.num_features = self.head_hidden_size = in_channels
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(self.drop_rate) if self.drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, self.num_classes)
        init_weights(self)
        if zero_init_last_bn:
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    module.zero_init_last_bn()

    def __prepare_scriptable__(self) -> nn.Module:
        raise ConfigError(NOT_SCRIPTABLE)

    # ---- timm's model interface ------------------------------------------------------------------------

    @property
    def pretrained_cfg(self) -> dict[str, object]:
        """timm's pretrained_cfg (input_size, interpolation, crop_pct, crop_mode, mean, std, num_classes,
        first_conv, classifier, ...), derived from ``data_config``; assigning one sets ``data_config``."""
        return pretrained_cfg(self)

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: dict[str, object]) -> None:
        self.data_config = data_config_from_pretrained_cfg(cfg, self.in_chans)

    default_cfg = pretrained_cfg  # timm's older name

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new, freshly initialised classifier for `num_classes` (fine-tuning; timm's name for it); 0
        removes it, so that ``forward`` gives the pooled features (N, num_features). The class names
        recorded in ``data_config`` no longer apply and are dropped. `global_pool`: only "avg" exists."""
        check_positive_int("num_classes", num_classes, minimum=0)
        if global_pool not in (None, "avg"):
            raise ConfigError(f"global_pool={global_pool!r}: sknet models pool by average ('avg') only")
        self.num_classes = num_classes
        like = self.stem.conv.conv.weight
        if num_classes == 0:
            self.fc = nn.Identity()
        else:
            self.fc = nn.Linear(self.num_features, num_classes).to(like.device, like.dtype)
            init_weights(self.fc)
        record = getattr(self, "data_config", None)
        if record is not None and record.classes is not None:
            self.data_config = dataclasses.replace(record, classes=None)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, object]:
        """timm's parameter grouping (layer-wise lr decay, ``create_optimizer_v2(layer_decay=)``): the stem,
        then one group per stage (`coarse`) or per unit, a last 1×1 conv with the last; the classifier last."""
        blocks = r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)"
        return {"stem": r"^stem", "blocks": [(blocks, None), (r"^head_conv", (99999,))]}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage in backward instead of keeping its activations (torch.utils.checkpoint):
        same outputs, gradients to rounding, less activation memory, one more forward per stage. BN running
        statistics are updated once per step, as without it."""
        self.grad_checkpointing = bool(enable)

    def _stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(stage, x, use_reentrant=False, context_fn=functools.partial(_contexts, stage))
        return stage(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's API: (final features, [stage outputs]) or, with `intermediates_only`, the list.

        `indices` index ``feature_info`` (the stages): None all, an int n the last n, or a list (negative
        from the end). `stop_early` skips the stages after the last one asked for. `norm` has nothing to
        apply (no final norm layer). ConfigError for an index out of range or another `output_fmt`.
        """
        count = len(self.stage_names)
        take = list(range(count)) if indices is None else _take_indices(indices, count)
        if output_fmt != "NCHW":
            raise ConfigError(f"output_fmt={output_fmt!r}: sknet models give NCHW feature maps only")
        check_image_batch(x, self.in_chans, type(self).__name__)
        x = self.stem(x)
        intermediates = []
        last = max(take) if stop_early or intermediates_only else count - 1
        for i, stage in enumerate(self.stages()[: last + 1]):
            x = self._stage(stage, x)
            if i in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if self.head_conv is not None and last == count - 1:
            x = self.head_conv(x)
        return x, intermediates

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, name) for name in self.stage_names]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) → the last stage's feature map."""
        check_image_batch(x, self.in_chans, type(self).__name__)
        x = self.stem(x)
        for stage in self.stages():
            x = self._stage(stage, x)
        if self.head_conv is not None:
            x = self.head_conv(x)
        return x

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, in_chans, H, W) → every stage's output (C2–C5 for the ImageNet ResNeXts), see feature_info."""
        return self.forward_intermediates(x, intermediates_only=True)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The last feature map (N, num_features, h, w) → logits (N, num_classes); `pre_logits`: the pooled
        features (N, num_features) the classifier reads (after dropout, as timm)."""
        x = self.drop(self.global_pool(x).flatten(1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _take_indices(indices: int | Sequence[int], count: int) -> list[int]:
    """timm's meaning of `indices` over `count` stages: an int n → the last n, a list → those."""
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= count:
            raise ConfigError(f"indices={indices}: the model has {count} stages")
        return list(range(count - indices, count))
    chosen = [int(i) for i in indices]
    if not chosen or any(not -count <= i < count for i in chosen):
        raise ConfigError(f"indices {list(indices)!r} must index the {count} stages (0..{count - 1})")
    return sorted({i % count for i in chosen})


def _contexts(stage: nn.Module) -> tuple[contextlib.AbstractContextManager, _KeepBuffers]:
    """torch.utils.checkpoint's (forward, recompute) contexts for a stage."""
    return contextlib.nullcontext(), _KeepBuffers(stage)


class _KeepBuffers:
    """Recomputing a checkpointed stage in backward re-runs its BN layers in training mode: their running
    statistics (and batch counts) are put back afterwards, so that each step updates them once. Reusable:
    a backward may recompute the same stage more than once."""

    def __init__(self, stage: nn.Module) -> None:
        self.stage = stage
        self.saved: list[list[tuple[torch.Tensor, torch.Tensor]]] = []

    def __enter__(self) -> None:
        self.saved.append([(buffer, buffer.clone()) for buffer in self.stage.buffers()])

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for buffer, value in self.saved.pop():
                buffer.copy_(value)
