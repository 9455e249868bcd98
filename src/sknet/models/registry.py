"""Model registry: builders register under a name; `create_model` builds by name with validated overrides."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sknet.data.config import DataConfig
from sknet.errors import CheckpointError, ConfigError, UnknownModelError
from sknet.models.finetune import FIRST_CONV, channel_stats, fit_state
from sknet.models.hub_names import hub_weights, is_hub_name
from sknet.weights import load_state_into, read_weights


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model without building it."""

    name: str
    family: str  # "imagenet", "cifar", "lightweight", "ablation", ...
    builder: Callable[..., nn.Module]
    options: tuple[str, ...]  # keyword overrides the builder accepts
    input_size: tuple[int, int, int]  # native (C, H, W); C is the default in_chans
    description: str
    num_classes: int = 1000  # the default classifier outputs

    def check_options(self, options) -> None:
        """ConfigError naming any of `options` that the builder does not take, and those it does."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ConfigError(
                f"model {self.name!r} has no option {', '.join(map(repr, unknown))}; "
                f"its options are: {', '.join(self.options)}"
            )


# Options a model takes from its data (and its weights record): set by training and loading, not by users.
DATA_OPTIONS = ("num_classes", "in_chans")


def settle_fixed(fixed: dict[str, object], asked: dict[str, object], source: str, fine_tune: bool) -> dict[str, object]:
    """The one rule for the values a model's weights or its data fix (:data:`DATA_OPTIONS`): `fixed` holds
    them, `asked` what the caller gave. Not asked, or asked equal: the fixed value. Asked different: with
    `fine_tune` (``create_model(weights=..., num_classes=...)``: the caller asks to fit the weights — the
    classifier re-initialised, the first conv adapted, said in a UserWarning) the asked value;
    without (``sknet train``'s model options, where the data decide) ConfigError naming both."""
    settled = dict(fixed)
    for key, value in asked.items():
        if key in fixed and value != fixed[key] and not fine_tune:
            raise ConfigError(f"model option {key}={value} does not match {source} ({fixed[key]})")
        if key in fixed:
            settled[key] = value
    return settled


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    family: str, options: tuple[str, ...], input_size: tuple[int, int, int] = (3, 224, 224), num_classes: int = 1000
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder under its function name, with the keyword `options` it accepts, its native
    input size (C, H, W) and its default class count (the builder's defaults for ``in_chans`` and
    ``num_classes``: create_model passes them)."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} is registered twice")
        doc = inspect.getdoc(builder) or ""
        description = doc.splitlines()[0] if doc else ""
        unique = tuple(dict.fromkeys(options))
        _REGISTRY[name] = ModelInfo(name, family, builder, unique, input_size, description, num_classes)
        return builder

    return decorate


def list_models(pattern: str = "*", family: str | None = None) -> list[str]:
    """Registered model names (sorted), optionally filtered by a glob `pattern` and a `family`."""
    return sorted(
        name
        for name, info in _REGISTRY.items()
        if fnmatch.fnmatch(name, pattern) and (family is None or info.family == family)
    )


def model_info(name: str) -> ModelInfo:
    """The registry entry of `name`; UnknownModelError lists close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see sknet.list_models()"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


# Sources of pretrained weights, registered by their converters (see sknet/__init__.py): the registry
# itself does not depend on any converter. A source's fetch(name) gives (state dict in sknet's keys, its record).
PretrainedFetch = Callable[[str], "tuple[dict[str, torch.Tensor], dict[str, object]]"]
_PRETRAINED: dict[str, tuple[PretrainedFetch, frozenset[str]]] = {}


def register_pretrained(source: str, fetch: PretrainedFetch, names: Sequence[str]) -> None:
    """Make ``create_model(name, pretrained=source)`` (and ``pretrained=True``, the first source holding
    `name`) build `name` with the weights ``fetch(name)`` returns, for each of `names`."""
    _PRETRAINED[source] = (fetch, frozenset(names))


def pretrained_sources(name: str) -> list[str]:
    """The sources of pretrained weights for `name` (empty: none known)."""
    return [source for source, (_, names) in _PRETRAINED.items() if name in names]


@dataclass(frozen=True)
class _Weights:
    """Weights to build a model with: the state dict (sknet's keys), its record, what to call them in messages,
    and the file they were read from (None: fetched)."""

    state: dict[str, torch.Tensor]
    meta: dict[str, object]
    label: str
    file: str | None = None


def create_model(
    name: str | None = None,
    num_classes: int | None = None,
    weights: str | Path | None = None,
    pretrained: bool | str = False,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    **overrides: object,
) -> nn.Module:
    """Build a registered model, optionally loading weights.

    The model's :class:`~sknet.data.config.DataConfig` (input size, crop, mean/std, classes) is its
    ``data_config`` attribute: the one recorded in `weights`, else the model's defaults.

    Args:
        name: a name from :func:`list_models`, e.g. ``"sknet50"``; may be left out with `weights` that
            record it. ``"local-dir:DIR"`` and ``"hf-hub:ORG/NAME"`` name a folder written by
            :func:`sknet.save_pretrained`, local or on the Hugging Face Hub (``pip install 'sknet[hub]'``;
            the Hub's local cache is read first, so it works offline once cached).
        num_classes: classifier outputs (default: the model's own, 1000 for ImageNet models); 0: no
            classifier, the model gives its pooled features (N, num_features), as timm's.
        weights: a ``.safetensors`` file written by sknet (its recorded options and class count are used
            unless overridden) or a checkpoint / state-dict ``.pt`` file (bare, or under ``state_dict``,
            ``model`` or ``state_dict_ema``; ``module.`` / ``_orig_mod.`` prefixes removed), loaded safely
            and strictly. Fine-tuning: a `num_classes` or ``in_chans`` other than the weights' re-initialises
            the classifier / adapts the first conv (timm's rule: summed for one channel, tiled and rescaled
            for more), logged in one line on the "sknet" logger; everything else must match.
        pretrained: True, or a source's name (``"timm"``): ImageNet weights sknet knows for `name` — those of
            its timm counterpart (sknet50 ← skresnext50_32x4d, resnext50/101, senet50/101), fetched by timm
            (the Hub's cache first; the internet once). Loaded as `weights` are: `num_classes` and ``in_chans``
            fit them for fine-tuning, options that keep the weights' shapes (``norm_layer``,
            ``output_stride``, ``frozen_stages``, dropout, ``global_pool``) apply.
        features_only: a :class:`~sknet.models.features.FeatureExtractor` instead: the stem's and every
            stage's outputs, as timm's ``features_only`` (`out_indices` index ``feature_info``: 0 the stem,
            then the stages; default all, an int n: the last n).
        overrides: builder options such as ``in_chans``, ``drop_rate``, ``branches``, ``norm_layer``,
            ``output_stride``; an option the model does not have is a ConfigError listing those it has.
    """
    if is_hub_name(name):  # local-dir:DIR, hf-hub:ORG/NAME: a folder of weights and their record
        if weights is not None or pretrained:
            raise ConfigError(f"{name} names its weights: no weights= or pretrained=")
        name, weights = None, hub_weights(name)
    if out_indices is not None and not features_only:
        raise ConfigError("out_indices needs features_only=True")
    source = None
    if weights is not None:
        if pretrained:
            raise ConfigError("give weights= or pretrained=, not both")
        state, meta = read_weights(weights)
        source = _Weights(state, meta, str(weights), str(weights))
    elif pretrained:
        source = _pretrained(name, pretrained)
    model = _build(name, num_classes, source, overrides)
    return _features(model, out_indices) if features_only else model


def _pretrained(name: str | None, pretrained: object) -> _Weights:
    """The pretrained weights `pretrained` names for `name`."""
    if name is None:
        raise ConfigError("pretrained weights need a model name")
    model_info(name)
    sources = pretrained_sources(name)
    if pretrained is True:
        if not sources:
            known = sorted({n for _, names in _PRETRAINED.values() for n in names})
            raise ConfigError(
                f"no pretrained weights are known for {name!r} (models with weights: {', '.join(known)}); "
                "weights of your own: weights=PATH"
            )
        pretrained = sources[0]
    if not isinstance(pretrained, str) or pretrained not in _PRETRAINED:
        raise ConfigError(
            f"pretrained={pretrained!r}: use True, or a source of weights ({', '.join(map(repr, _PRETRAINED))}); "
            "trained weights of your own: weights=PATH"
        )
    if pretrained not in sources:
        raise ConfigError(
            f"{pretrained!r} has no weights for {name!r} (it has: {', '.join(sorted(_PRETRAINED[pretrained][1]))})"
        )
    state, meta = _PRETRAINED[pretrained][0](name)
    return _Weights(state, meta, f"{pretrained}'s weights of {name}")


def _features(model: nn.Module, out_indices: Sequence[int] | None) -> nn.Module:
    from sknet.models.features import FeatureExtractor

    extractor = FeatureExtractor(model, out_indices)
    extractor.data_config = model.data_config
    extractor.weights_meta = getattr(model, "weights_meta", {})
    return extractor


def _build(
    name: str | None, num_classes: int | None, source: _Weights | None, overrides: dict[str, object]
) -> nn.Module:
    meta, state, weights = {}, None, None
    if source is not None:
        state, meta, weights = source.state, source.meta, source.label
        name = name or meta.get("model")
        if not name:
            raise ConfigError(f"{weights} does not record its model: name it (create_model(name, weights=...))")
        found = meta.get("model")
        if found and found != name:
            raise CheckpointError(f"{weights} holds weights of model {found!r}, not {name!r}")
    elif name is None:
        raise ConfigError("create_model needs a model name (see sknet.list_models()) or weights=PATH")
    info = model_info(name)
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    asked = {key for key in DATA_OPTIONS if key in overrides}  # fine-tuning: fit the weights to these
    if state is not None:
        recorded = {**_sizes_of(state, info), **meta.get("model_options", {})}
        fixed = {key: meta.get(key, recorded.get(key)) for key in DATA_OPTIONS if key in info.options}
        fixed = {key: value for key, value in fixed.items() if value is not None}
        given = {key: overrides[key] for key in asked}
        overrides = {**recorded, **overrides, **settle_fixed(fixed, given, str(weights), fine_tune=True)}
    info.check_options(overrides)
    overrides = {"num_classes": info.num_classes, "in_chans": info.input_size[0], **overrides}
    if state is not None:
        # Sized from a file's metadata: check the shapes on the meta device (no memory) before building.
        with torch.device("meta"):
            shapes = info.builder(**overrides)
            own = shapes.state_dict()
            fitted = fit_state(state, own, str(weights), "num_classes" in asked, "in_chans" in asked, quiet=True)
            load_state_into(shapes, fitted, str(weights), name, meta.get("model"), check_only=True)
    model = info.builder(**overrides)
    if state is not None:
        state = fit_state(state, model.state_dict(), str(weights), "num_classes" in asked, "in_chans" in asked)
        load_state_into(model, state, str(weights), name, meta.get("model"))
    label = str(weights) if weights else name
    model.data_config = _data_config(info, overrides, _fitted_meta(meta, model), label)
    classes, outputs = model.data_config.classes, getattr(model, "num_classes", None)
    if classes and outputs and len(classes) != outputs:  # a file need not record num_classes
        raise CheckpointError(f"{weights}: {len(classes)} class names for a model of {outputs} classes")
    model.weights_meta = {"model": name, **meta}  # what the weights recorded (dataset, options, classes, ...)
    model.weights_file = source.file if source is not None else None
    model.model_options = {k: v for k, v in overrides.items() if k not in DATA_OPTIONS}  # as built
    return model


def _sizes_of(state: dict[str, torch.Tensor], info: ModelInfo) -> dict[str, int]:
    """The class and input-channel counts a state dict's classifier and first conv have (a bare state dict
    records nothing else); only options the model takes."""
    sizes = {}
    if "fc.weight" in state and state["fc.weight"].dim() == 2:
        sizes["num_classes"] = int(state["fc.weight"].shape[0])
    if f"{FIRST_CONV}.weight" in state and state[f"{FIRST_CONV}.weight"].dim() == 4:
        sizes["in_chans"] = int(state[f"{FIRST_CONV}.weight"].shape[1])
    return {k: v for k, v in sizes.items() if k in info.options}


def _fitted_meta(meta: dict, model: nn.Module) -> dict:
    """The weights' record for a model fitted to another class count (the class names no longer apply) or
    number of input channels (statistics averaged over the source's channels)."""
    if not meta:
        return meta
    meta = dict(meta)
    if meta.get("num_classes", model.num_classes) != model.num_classes:
        meta.update(num_classes=model.num_classes, classes=None)
    if meta.get("in_chans", model.in_chans) != model.in_chans:
        for key in ("mean", "std"):
            if key in meta:
                meta[key] = list(channel_stats(meta[key], model.in_chans))
        meta.update(in_chans=model.in_chans, channel_order="L" if model.in_chans == 1 else "RGB")
    return meta


def default_data_config(info: ModelInfo, in_chans: int | None = None) -> DataConfig:
    """The preprocessing of `info`'s model as built without weights: its native size and the default
    statistics of its channels, small images (28×28, 32×32: under 64 pixels) evaluated uncropped."""
    defaults = {"input_size": info.input_size[1], "in_chans": in_chans or info.input_size[0]}
    if info.input_size[1] < 64:
        defaults["crop_fraction"] = 1.0
    return DataConfig.from_metadata(defaults, info.name)


def _data_config(info: ModelInfo, options: dict[str, object], meta: dict, source: str) -> DataConfig:
    """The recorded input record, or the model's own defaults (native size, ImageNet statistics)."""
    if meta:
        return DataConfig.from_metadata(meta, source)
    return default_data_config(info, int(options.get("in_chans", info.input_size[0])))  # type: ignore[arg-type]
