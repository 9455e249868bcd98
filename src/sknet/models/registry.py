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

from sknet.errors import CheckpointError, ConfigError, UnknownModelError
from sknet.weights import DataConfig, load_state_into, read_weights


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
PretrainedLoader = Callable[[str, "int | None"], nn.Module]
_PRETRAINED: dict[str, PretrainedLoader] = {}


def register_pretrained(source: str, loader: PretrainedLoader) -> None:
    """Make ``create_model(name, pretrained=source)`` call ``loader(name, num_classes)``."""
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

    The model's :class:`~sknet.weights.DataConfig` (input size, crop, mean/std, classes) is its
    ``data_config`` attribute: the one recorded in `weights`, else the model's defaults.

    Args:
        name: a name from :func:`list_models`, e.g. ``"sknet50"``; may be left out with `weights` that
            record it.
        num_classes: classifier outputs (default: the model's own, 1000 for ImageNet models).
        weights: a ``.safetensors`` file written by sknet (its recorded options and class count are used
            unless overridden) or a checkpoint / state-dict ``.pt`` file, loaded safely and strictly.
        pretrained: ``"timm"``: ImageNet weights of the timm counterpart (sknet50 ← skresnext50_32x4d,
            resnext50/101, senet50/101), fetched by timm; needs the internet once.
        features_only: return a :class:`~sknet.models.features.FeatureExtractor` giving the stage outputs
            (C2–C5) instead of logits; `out_indices` picks stages (default all).
        overrides: builder options such as ``in_chans``, ``drop_rate``, ``branches``, ``aggregation``;
            an option the model does not have is a ConfigError listing those it has.
    """
    if pretrained is not None:
        if not isinstance(pretrained, str) or pretrained not in _PRETRAINED:
            sources = ", ".join(repr(s) for s in _PRETRAINED) or "none registered"
            raise ConfigError(
                f"pretrained={pretrained!r}: name the source of the weights, e.g. pretrained='timm' (ImageNet "
                f"weights of the timm counterpart); sources: {sources}. Trained weights of your own: weights=PATH"
            )
        if weights is not None or overrides or name is None:
            raise ConfigError("pretrained weights need a model name and fix the architecture: no weights= or options")
        model_info(name)
        model = _PRETRAINED[pretrained](name, num_classes)
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
    if weights is not None:
        recorded = dict(meta.get("model_options", {}))
        for key in DATA_OPTIONS:
            if key in meta and key in info.options:
                recorded[key] = meta[key]
        overrides = {**recorded, **overrides}
    info.check_options(overrides)
    if state is not None:
        # Sized from a file's metadata: check the shapes on the meta device (no memory) before building.
        with torch.device("meta"):
            load_state_into(info.builder(**overrides), state, str(weights), name, meta.get("model"), check_only=True)
    model = info.builder(**overrides)
    if state is not None:
        load_state_into(model, state, str(weights), name, meta.get("model"))
    model.data_config = _data_config(info, overrides, meta, str(weights) if weights else name)
    classes, outputs = model.data_config.classes, getattr(model, "num_classes", None)
    if classes and outputs is not None and len(classes) != outputs:  # a file need not record num_classes
        raise CheckpointError(f"{weights}: {len(classes)} class names for a model of {outputs} classes")
    model.weights_meta = {"model": name, **meta}  # what the weights recorded (dataset, options, ...)
    return model


def _data_config(info: ModelInfo, options: dict[str, object], meta: dict, source: str) -> DataConfig:
    """The recorded input record, or the model's own defaults (native size, ImageNet statistics)."""
    if meta:
        return DataConfig.from_metadata(meta, source)
    in_chans = int(options.get("in_chans", info.input_size[0]))  # type: ignore[arg-type]
    defaults = {"input_size": info.input_size[1], "in_chans": in_chans}
    if info.input_size[1] < 64:  # small-image models (28×28, 32×32) are evaluated uncropped
        defaults["crop_fraction"] = 1.0
    return DataConfig.from_metadata(defaults, source)
