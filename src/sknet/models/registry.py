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
    input_size: tuple[int, int, int]  # native (C, H, W)
    description: str

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
    classifier re-initialised, the first conv adapted, logged on the "sknet" logger) the asked value;
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
    family: str, options: tuple[str, ...], input_size: tuple[int, int, int] = (3, 224, 224)
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder under its function name, with the keyword `options` it accepts."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} is registered twice")
        doc = inspect.getdoc(builder) or ""
        _REGISTRY[name] = ModelInfo(
            name, family, builder, tuple(options), input_size, doc.splitlines()[0] if doc else ""
        )
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
# itself does not depend on any converter.
PretrainedLoader = Callable[[str, "int | None", "int | None"], nn.Module]
_PRETRAINED: dict[str, PretrainedLoader] = {}


def register_pretrained(source: str, loader: PretrainedLoader) -> None:
    """Make ``create_model(name, pretrained=source)`` call ``loader(name, num_classes, in_chans)``."""
    _PRETRAINED[source] = loader


def create_model(
    name: str | None = None,
    num_classes: int | None = None,
    weights: str | Path | None = None,
    pretrained: str | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
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
        num_classes: classifier outputs (default: the model's own, 1000 for ImageNet models).
        weights: a ``.safetensors`` file written by sknet (its recorded options and class count are used
            unless overridden) or a checkpoint / state-dict ``.pt`` file (bare, or under ``state_dict``,
            ``model`` or ``state_dict_ema``; ``module.`` / ``_orig_mod.`` prefixes removed), loaded safely
            and strictly. Fine-tuning: a `num_classes` or ``in_chans`` other than the weights' re-initialises
            the classifier / adapts the first conv (timm's rule: summed for one channel, tiled and rescaled
            for more), logged in one line on the "sknet" logger; everything else must match.
        pretrained: ``"timm"``: ImageNet weights of the timm counterpart (sknet50 ← skresnext50_32x4d,
            resnext50/101, senet50/101), fetched by timm; needs the internet once. With `num_classes` and
            ``in_chans`` the classifier is re-initialised and the first conv adapted, as with `weights`.
        features_only: return a :class:`~sknet.models.features.FeatureExtractor` giving the stage outputs
            (C2–C5) instead of logits; `out_indices` picks stages (default all).
        overrides: builder options such as ``in_chans``, ``drop_rate``, ``branches``, ``aggregation``;
            an option the model does not have is a ConfigError listing those it has.
    """
    if is_hub_name(name):  # local-dir:DIR, hf-hub:ORG/NAME: a folder of weights and their record
        if weights is not None or pretrained is not None:
            raise ConfigError(f"{name} names its weights: no weights= or pretrained=")
        name, weights = None, hub_weights(name)
    if pretrained is not None:
        if not isinstance(pretrained, str) or pretrained not in _PRETRAINED:
            sources = ", ".join(repr(s) for s in _PRETRAINED) or "none registered"
            raise ConfigError(
                f"pretrained={pretrained!r}: name the source of the weights, e.g. pretrained='timm' (ImageNet "
                f"weights of the timm counterpart); sources: {sources}. Trained weights of your own: weights=PATH"
            )
        if weights is not None or set(overrides) - {"in_chans"} or name is None:
            raise ConfigError(
                "pretrained weights need a model name and fix the architecture: no weights= or options "
                "(num_classes= and in_chans= fit them for fine-tuning)"
            )
        model_info(name)
        model = _PRETRAINED[pretrained](name, num_classes, overrides.get("in_chans"))
        if not isinstance(getattr(model, "data_config", None), DataConfig):
            model.data_config = DataConfig()  # ImageNet's preprocessing
        return _features(model, out_indices) if features_only else model
    if out_indices is not None and not features_only:
        raise ConfigError("out_indices needs features_only=True")
    model = _build(name, num_classes, weights, overrides)
    return _features(model, out_indices) if features_only else model


def _features(model: nn.Module, out_indices: Sequence[int] | None) -> nn.Module:
    from sknet.models.features import FeatureExtractor

    extractor = FeatureExtractor(model, out_indices)
    extractor.data_config = model.data_config
    extractor.weights_meta = getattr(model, "weights_meta", {})
    return extractor


def _build(
    name: str | None, num_classes: int | None, weights: str | Path | None, overrides: dict[str, object]
) -> nn.Module:
    meta, state = {}, None
    if weights is not None:
        state, meta = read_weights(weights)
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
    source = str(weights) if weights else name
    model.data_config = _data_config(info, overrides, _fitted_meta(meta, model), source)
    classes, outputs = model.data_config.classes, getattr(model, "num_classes", None)
    if classes and outputs is not None and len(classes) != outputs:  # a file need not record num_classes
        raise CheckpointError(f"{weights}: {len(classes)} class names for a model of {outputs} classes")
    model.weights_meta = {"model": name, **meta}  # what the weights recorded (dataset, options, classes, ...)
    model.weights_file = str(weights) if weights is not None else None
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


def _data_config(info: ModelInfo, options: dict[str, object], meta: dict, source: str) -> DataConfig:
    """The recorded input record, or the model's own defaults (native size, ImageNet statistics)."""
    if meta:
        return DataConfig.from_metadata(meta, source)
    in_chans = int(options.get("in_chans", info.input_size[0]))  # type: ignore[arg-type]
    defaults = {"input_size": info.input_size[1], "in_chans": in_chans}
    if info.input_size[1] < 64:  # small-image models (28×28, 32×32) are evaluated uncropped
        defaults["crop_fraction"] = 1.0
    return DataConfig.from_metadata(defaults, source)
