"""Model registry: builders register under a name; `create_model` builds by name with validated overrides."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from sknet.errors import ConfigError, UnknownModelError


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model without building it."""

    name: str
    family: str  # "imagenet", "cifar", "lightweight", "ablation", ...
    builder: Callable[..., nn.Module]
    options: tuple[str, ...]  # keyword overrides the builder accepts
    input_size: tuple[int, int, int]  # native (C, H, W)
    description: str


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


def create_model(
    name: str,
    num_classes: int | None = None,
    weights: str | Path | None = None,
    pretrained: str | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **overrides: object,
) -> nn.Module:
    """Build a registered model, optionally loading weights.

    Args:
        name: a name from :func:`list_models`, e.g. ``"sknet50"``.
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
        if pretrained != "timm":
            raise ConfigError(f"pretrained={pretrained!r}: the only source is 'timm'")
        if weights is not None or overrides:
            raise ConfigError("pretrained weights fix the architecture: no weights= or other options with them")
        from sknet.convert.timm import load_timm_pretrained

        model = load_timm_pretrained(name, num_classes)
        return _features(model, out_indices) if features_only else model
    if out_indices is not None and not features_only:
        raise ConfigError("out_indices needs features_only=True")
    model = _build(name, num_classes, weights, overrides)
    return _features(model, out_indices) if features_only else model


def _features(model: nn.Module, out_indices: Sequence[int] | None) -> nn.Module:
    from sknet.models.features import FeatureExtractor

    return FeatureExtractor(model, out_indices)


def _build(name: str, num_classes: int | None, weights: str | Path | None, overrides: dict[str, object]) -> nn.Module:
    info = model_info(name)
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    state = None
    if weights is not None:
        from sknet.train.checkpoint import load_state_into, read_weights

        state, meta = read_weights(weights)
        found = meta.get("model")
        if found and found != name:
            from sknet.errors import CheckpointError

            raise CheckpointError(f"{weights} holds weights of model {found!r}, not {name!r}")
        recorded = dict(meta.get("model_options", {}))
        for key in ("num_classes", "in_chans"):
            if key in meta and key in info.options:
                recorded[key] = meta[key]
        overrides = {**recorded, **overrides}
    unknown = sorted(set(overrides) - set(info.options))
    if unknown:
        raise ConfigError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; its options are: {', '.join(info.options)}"
        )
    model = info.builder(**overrides)
    if state is not None:
        load_state_into(model, state, str(weights), name, found)
    return model
