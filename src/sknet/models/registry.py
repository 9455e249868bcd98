"""Model registry: builders register under a name; `create_model` builds by name with validated overrides."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
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
    name: str, num_classes: int | None = None, weights: str | Path | None = None, **overrides: object
) -> nn.Module:
    """Build a registered model, optionally loading weights.

    Args:
        name: a name from :func:`list_models`, e.g. ``"sknet50"``.
        num_classes: classifier outputs (default: the model's own, 1000 for ImageNet models).
        weights: a ``.safetensors`` file written by sknet (its recorded options and class count are used
            unless overridden) or a checkpoint / state-dict ``.pt`` file, loaded safely and strictly.
        overrides: builder options such as ``in_chans``, ``drop_rate``, ``branches``, ``aggregation``;
            an option the model does not have is a ConfigError listing those it has.
    """
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
