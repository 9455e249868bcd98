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
from sknet.layers import BlockConfig, Bottleneck, SKConv2d
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
# The options every family takes (norm_layer is a BlockConfig field: the block's norms, the stem's and the head's).
NETWORK_OPTIONS = ("num_classes", "in_chans", "drop_rate", "global_pool", "frozen_stages", "norm_eval", "norm_layer")
OUTPUT_STRIDES = (8, 16, 32)


def stage_strides(strides: Sequence[int], output_stride: int, stem_stride: int) -> list[tuple[int, int, int, int]]:
    """Per stage (stride of its first unit, dilation of its units, dilation of its first unit, its output's
    reduction) for a network whose stages stride by `strides` after a stem of `stem_stride`, made to stop at
    `output_stride` (8, 16 or 32): a stage that would go past it dilates by its stride instead, its first unit
    keeping the dilation before (timm's and torchvision's rule). A network whose own stride is smaller is
    unchanged."""
    if isinstance(output_stride, bool) or output_stride not in OUTPUT_STRIDES:
        raise ConfigError(f"output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))}, got {output_stride!r}")
    net_stride, dilation, plan = stem_stride, 1, []
    for stride in strides:
        first_dilation = dilation
        if net_stride * stride > output_stride:
            dilation, stride = dilation * stride, 1
        net_stride *= stride
        plan.append((stride, dilation, first_dilation, net_stride))
    return plan


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


GLOBAL_POOLS = ("avg", "max", "avgmax", "")  # timm's names; "": no pooling (the classifier must be removed)


class AvgMaxPool(nn.Module):
    """(avg + max) / 2 over H×W, keeping (N, C, 1, 1): timm's "avgmax"."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x.mean((2, 3), keepdim=True) + x.amax((2, 3), keepdim=True))


def make_global_pool(kind: str) -> nn.Module:
    """The head's global pooling by timm's name: "avg" (the paper's), "max", "avgmax", or "" (none)."""
    pools = {"avg": lambda: nn.AdaptiveAvgPool2d(1), "max": lambda: nn.AdaptiveMaxPool2d(1), "avgmax": AvgMaxPool}
    if kind == "":
        return nn.Identity()
    if kind not in pools:
        raise ConfigError(f"global_pool={kind!r}: use one of {', '.join(map(repr, GLOBAL_POOLS))}")
    return pools[kind]()


class BottleneckNet(nn.Module):
    """Base of every family: ResNeXt / SENet / SKNet, CIFAR, ShuffleNetV2, MobileNetV2.

    Besides ``forward`` it has timm's model interface, so timm's and torchvision's tools work on it:
    ``pretrained_cfg`` / ``default_cfg`` (derived from ``data_config``), ``get_classifier``,
    ``reset_classifier``, ``forward_features``, ``forward_head(pre_logits=)``, ``forward_intermediates``,
    ``prune_intermediate_layers``, ``feature_info`` (the stem's output where timm's counterparts list it, then
    the stages), ``group_matcher`` (layer-wise lr decay) and ``set_grad_checkpointing``.

    Options every family takes: `num_classes` (0: no classifier, ``forward`` gives the pooled features),
    `global_pool` (:data:`GLOBAL_POOLS`), `drop_rate`; `frozen_stages` (mmdet's meaning: -1 none, 0 the stem,
    k the stem and the first k stages: no gradients, norms in evaluation mode whatever ``train()`` says) and
    `norm_eval` (every BatchNorm in evaluation mode in training: running statistics kept, as detection
    fine-tuning does).
    """

    stem: nn.Module
    stage_names: list[str]
    head_conv: nn.Module | None

    def __init__(
        self,
        num_classes: int,
        in_chans: int,
        drop_rate: float,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        frozen_stages: int = -1,
        norm_eval: bool = False,
        num_stages: int = 4,
    ) -> None:
        """`num_stages`: how many stages the family builds (what `frozen_stages` may count up to)."""
        super().__init__()
        check_positive_int("num_classes", num_classes, minimum=0)
        check_positive_int("in_chans", in_chans)
        for name, rate in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {rate!r}")
        if global_pool == "" and num_classes:
            raise ConfigError("global_pool='' (no pooling) needs num_classes=0 (no classifier)")
        make_global_pool(global_pool)  # the name checked before anything is built
        if (
            isinstance(frozen_stages, bool)
            or not isinstance(frozen_stages, int)
            or not -1 <= frozen_stages <= num_stages
        ):
            raise ConfigError(
                f"frozen_stages must be an integer from -1 to {num_stages} (-1: none, 0: the stem, {num_stages}: "
                f"the stem and every stage), got {frozen_stages!r}"
            )
        if not isinstance(norm_eval, bool):
            raise ConfigError(f"norm_eval must be True or False, got {norm_eval!r}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = float(drop_rate)
        self.drop_path_rate = float(drop_path_rate)
        self.global_pool_type = global_pool
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.stage_names = []
        self.head_conv = None  # a last 1×1 conv before pooling (ShuffleNetV2 conv5, MobileNetV2)
        self.feature_info: list[dict[str, object]] = []
        self.grad_checkpointing = False

    def block_drop_path(self, index: int, total: int) -> float:
        """The stochastic-depth rate of bottleneck `index` (0-based) of `total`: linear over depth from 0 for
        the first to `drop_path_rate` for the last (Huang et al. 2016; timm's ResNets:
        drop_path_rate · index / (total − 1))."""
        return self.drop_path_rate * index / max(total - 1, 1)

    def add_stem_feature(self, channels: int, reduction: int) -> None:
        """The stem's conv block (``stem.conv``, before any pooling) is a feature level, as timm's ResNets'."""
        self.feature_info.append({"num_chs": channels, "reduction": reduction, "module": STEM_FEATURE})

    def add_stage(self, stage: nn.Sequential, out_channels: int, reduction: int, feature: bool = True) -> None:
        """Register the next stage (``layer1``, ``layer2``, ...); `feature`: its output is a feature level."""
        name = f"layer{len(self.stage_names) + 1}"
        self.add_module(name, stage)
        self.stage_names.append(name)
        if feature:
            self.feature_info.append({"num_chs": out_channels, "reduction": reduction, "module": name})

    def build_head(self, in_channels: int, zero_init_last_bn: bool) -> None:
        """Global pool → dropout → fc, then initialise every weight and freeze what `frozen_stages` says."""
        self.num_features = self.head_hidden_size = in_channels
        self.global_pool = make_global_pool(self.global_pool_type)
        self.drop = nn.Dropout(self.drop_rate) if self.drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, self.num_classes) if self.num_classes else nn.Identity()
        init_weights(self)
        if zero_init_last_bn:
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    module.zero_init_last_bn()
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train(self.training)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and the stages `frozen_stages` freezes."""
        if self.frozen_stages < 0:
            return []
        return [self.stem, *self.stages()[: self.frozen_stages]]

    def train(self, mode: bool = True) -> BottleneckNet:
        """As nn.Module's, then the frozen stages and, with `norm_eval`, every BatchNorm back in evaluation
        mode (mmdet's rule for backbones)."""
        super().train(mode)
        if mode:
            for module in self.frozen_modules():
                module.eval()
            if self.norm_eval:
                for module in self.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
        return self

    def __prepare_scriptable__(self) -> nn.Module:
        raise ConfigError(NOT_SCRIPTABLE)

    # ---- timm's model interface ------------------------------------------------------------------------

    @property
    def pretrained_cfg(self) -> dict[str, object]:
        """timm's pretrained_cfg (input_size, interpolation, crop_pct, crop_mode, mean, std, num_classes,
        pool_size, first_conv, classifier, ...), derived from ``data_config``; assigning one sets
        ``data_config``."""
        return pretrained_cfg(self)

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: dict[str, object]) -> None:
        self.data_config = data_config_from_pretrained_cfg(cfg, self.in_chans)

    default_cfg = pretrained_cfg  # timm's older name

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new, freshly initialised classifier for `num_classes` (fine-tuning; timm's name for it); 0
        removes it, so that ``forward`` gives the pooled features (N, num_features), and with
        ``global_pool=""`` also the pooling (the last feature map). The class names recorded in
        ``data_config`` no longer apply and are dropped. `global_pool`: see :data:`GLOBAL_POOLS`."""
        check_positive_int("num_classes", num_classes, minimum=0)
        kind = self.global_pool_type if global_pool is None else global_pool
        if kind == "" and num_classes:
            raise ConfigError("global_pool='' (no pooling) needs num_classes=0 (no classifier)")
        self.global_pool = make_global_pool(kind)
        self.global_pool_type = kind
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
        """timm's API: (final features, [feature maps]) or, with `intermediates_only`, the list.

        `indices` index ``feature_info`` (the stem where listed, then the stages): None all, an int n the last
        n, or a list (negative from the end). `stop_early` skips the stages after the last one asked for.
        `norm` has nothing to apply (no final norm layer). ConfigError for an index out of range or another
        `output_fmt`.
        """
        take = take_indices(indices, len(self.feature_info))
        if output_fmt != "NCHW":
            raise ConfigError(f"output_fmt={output_fmt!r}: sknet models give NCHW feature maps only")
        check_image_batch(x, self.in_chans, type(self).__name__, weights_dtype(self))
        check_batch(self, x)
        wanted = {self.feature_info[i]["module"] for i in take}
        last = self.feature_info[max(take)]["module"] if stop_early or intermediates_only else None
        x, intermediates = run_features(self.stem, self.named_stages(), x, wanted, last, self._stage)
        if intermediates_only:
            return intermediates
        if self.head_conv is not None and last in (None, self.stage_names[-1]):
            x = self.head_conv(x)
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """timm's API: drop the stages after the last feature level in `indices` (and, with `prune_head`, the
        last 1×1 conv, pooling and classifier), for a backbone that only computes what it returns. Returns
        the indices, made non-negative."""
        take = take_indices(indices, len(self.feature_info))
        last = self.feature_info[max(take)]["module"]
        keep = 0 if last == STEM_FEATURE else self.stage_names.index(last) + 1
        for name in self.stage_names[keep:]:
            setattr(self, name, nn.Identity())
        if prune_head:
            self.head_conv = None
            self.reset_classifier(0, "")
        return take

    def named_stages(self) -> list[tuple[str, nn.Module]]:
        return [(name, getattr(self, name)) for name in self.stage_names]

    def stages(self) -> list[nn.Module]:
        return [getattr(self, name) for name in self.stage_names]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) → the last stage's feature map (N, num_features, H/r, W/r)."""
        check_image_batch(x, self.in_chans, type(self).__name__, weights_dtype(self))
        check_batch(self, x)
        x = self.stem(x)
        for stage in self.stages():
            x = self._stage(stage, x)
        if self.head_conv is not None:
            x = self.head_conv(x)
        return x

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, in_chans, H, W) → every feature level's map, as listed in ``feature_info``."""
        return self.forward_intermediates(x, intermediates_only=True)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The last feature map (N, num_features, h, w) → logits (N, num_classes); `pre_logits`: the pooled
        features (N, num_features) the classifier reads (after dropout, as timm). Without pooling
        (``global_pool=""``) the map itself."""
        x = self.global_pool(x)
        if self.global_pool_type:
            x = x.flatten(1)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


STEM_FEATURE = "stem.conv"  # the feature_info module name of the stem's conv block


def weights_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of `model`'s first floating-point parameter (its weights'), None without one."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def check_batch(model: nn.Module, x: torch.Tensor) -> None:
    """InputShapeError, before any work, for a batch of one in training where one of `model`'s SK layers
    normalises its fuse step over the batch (SKConv2d says why and what to use instead). Looks only then."""
    if model.training and not isinstance(x, torch.fx.Proxy) and x.shape[0] == 1:
        for module in model.modules():
            if isinstance(module, SKConv2d):
                module.check_batch_size(1)


def run_features(
    stem: nn.Module,
    stages: list[tuple[str, nn.Module]],
    x: torch.Tensor,
    wanted: set[str],
    last: str | None = None,
    run_stage=None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The stem then the stages on `x`, keeping the outputs of the feature levels named in `wanted` (their
    ``feature_info`` module names), in order; stops after the level `last` (None: runs every stage).
    Returns (the last output, the kept ones)."""
    out = []
    for name, module in stem.named_children():
        x = module(x)
        if f"stem.{name}" in wanted:
            out.append(x)
    if last == STEM_FEATURE:
        return x, out
    for name, stage in stages:
        x = stage(x) if run_stage is None else run_stage(stage, x)
        if name in wanted:
            out.append(x)
        if name == last:
            break
    return x, out


def take_indices(indices: int | Sequence[int] | None, count: int, name: str = "indices") -> list[int]:
    """timm's meaning of `indices` over `count` feature levels: None all, an int n the last n, a list those
    (negative from the end); sorted, without repeats. ConfigError for one out of range."""
    if indices is None:
        return list(range(count))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= count:
            raise ConfigError(f"{name}={indices}: the model has {count} feature levels")
        return list(range(count - indices, count))
    try:
        chosen = [int(i) for i in indices]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an int or a list of ints, got {indices!r}") from None
    if not chosen or any(not -count <= i < count for i in chosen):
        raise ConfigError(f"{name} {list(indices)!r} must index the {count} feature levels (0..{count - 1})")
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
