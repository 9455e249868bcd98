"""sknet's models as timm models: every name of :func:`sknet.list_models` is an entrypoint in timm's registry
once both are imported (in either order), so ``timm.create_model("sknet26", ...)`` and every tool built on
timm's names (timm's training scripts, libraries taking a timm backbone name) build sknet's models.

A name timm already has keeps timm's model; ours is registered as ``sknet_<name>`` (with timm 1.0:
``sknet_mobilenetv2_100``). :func:`timm_model_name` says which.

An entrypoint takes what timm's ResNet entrypoints take — ``pretrained``, ``num_classes``, ``in_chans``,
``features_only``, ``out_indices``, ``feature_cls``, ``output_stride``, ``norm_layer``, ``drop_rate``,
``drop_path_rate``, ``global_pool``, ``pretrained_cfg``, ``pretrained_cfg_overlay`` — and any builder option of
the model (``branches``, ``frozen_stages``, ...); the model is built by timm's own ``build_model_with_cfg``, so
pretrained weights, their adaptation (classifier, first conv) and feature extraction follow timm's rules.
Features: sknet's :class:`~sknet.models.features.FeatureExtractor` (weight names unchanged), or timm's class
named by ``feature_cls``.

Pretrained weights (``pretrained=True``): the models with a timm counterpart of the same topology (sknet50 ←
skresnext50_32x4d, resnext50/101, senet50/101) use its ImageNet weights from the Hugging Face Hub (timm's
cache first; the internet once), renamed to sknet's keys on load. Any other weights file:
``pretrained=True, pretrained_cfg_overlay=dict(file=PATH)`` (a ``model.safetensors`` of ``sknet train``, a
converted Caffe or timm file). A model without known weights is refused in one line instead of timm's warning
and random weights.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Callable

from torch import nn

from sknet.errors import ConfigError
from sknet.models import create_model, list_models, model_info
from sknet.models.features import FeatureExtractor
from sknet.models.hub_names import TIMM_COUNTERPARTS
from sknet.models.pretrained_cfg import pretrained_cfg_of_record
from sknet.models.registry import default_data_config

PREFIX = "sknet_"  # for a name timm's own registry already holds
_registered: dict[str, str] = {}  # sknet name → timm name, once registered


def timm_model_name(name: str) -> str:
    """The name `name` (an sknet model) has in timm's registry: its own, or ``sknet_<name>`` where timm has a
    model of that name itself. ConfigError before registration (timm not imported)."""
    if name not in _registered:
        model_info(name)  # UnknownModelError for a name sknet does not have
        raise ConfigError("sknet's models are in timm's registry once timm is imported (pip install 'sknet[timm]')")
    return _registered[name]


def _weights_cfgs(name: str) -> dict[str, dict]:
    """The pretrained cfgs of `name` keyed by timm's "name.tag": one per weights sknet knows (its timm
    counterpart's default tag: the same tag, hub id and preprocessing), else an untagged one without weights."""
    info = model_info(name)
    own = pretrained_cfg_of_record(default_data_config(info), name, info.num_classes, None)
    counterpart = TIMM_COUNTERPARTS.get(name)
    if counterpart is None:
        return {"": own}
    import timm.models

    theirs = timm.models.get_pretrained_cfg(counterpart).to_dict()
    keys = ("hf_hub_id", "url", "input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std", "license")
    return {theirs["tag"] or "": {**own, **{k: theirs[k] for k in keys if theirs.get(k) is not None}}}


def _filter_state(state: dict, model: nn.Module) -> dict:
    """timm's pretrained-weights filter: timm's keys renamed to sknet's (sknet's own files pass unchanged)."""
    from sknet.convert.timm import from_timm_state

    return from_timm_state(state)


def _build(name: str, **kwargs: object) -> nn.Module:
    """The model timm's builder asks for: sknet's `name` with the builder options in `kwargs` (timm's
    ``device``/``dtype`` applied after)."""
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    model = create_model(name, **kwargs)
    return model.to(device=device, dtype=dtype) if device is not None or dtype is not None else model


def _entrypoint(name: str, timm_name: str) -> Callable[..., nn.Module]:
    from timm.models import build_model_with_cfg
    from timm.models._builder import resolve_pretrained_cfg

    def create(pretrained: bool = False, **kwargs: object) -> nn.Module:
        if pretrained:
            cfg = resolve_pretrained_cfg(timm_name, kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay"))
            if not cfg.has_weights:
                known = ", ".join(sorted(timm_model_name(n) for n in TIMM_COUNTERPARTS))
                raise ConfigError(
                    f"{timm_name}: no pretrained weights are known to sknet (those with weights: {known}); weights "
                    "of your own: pretrained=True, pretrained_cfg_overlay=dict(file=PATH)"
                )
        return build_model_with_cfg(
            functools.partial(_build, name),
            timm_name,
            pretrained,
            feature_cfg={"feature_cls": FeatureExtractor, "out_indices": None},  # None: every level the model has
            pretrained_filter_fn=_filter_state,
            **kwargs,
        )

    create.__name__ = create.__qualname__ = timm_name
    create.__module__ = __name__
    create.__doc__ = model_info(name).description
    return create


def register_all() -> None:
    """Register every sknet model in timm's registry (idempotent; needs timm)."""
    import timm.models
    from timm.models import generate_default_cfgs, register_model

    taken = set(timm.models.list_models()) - set(_registered.values())
    new = {name: PREFIX + name if name in taken else name for name in list_models() if name not in _registered}
    cfgs = {}
    for name, timm_name in new.items():
        for tag, cfg in _weights_cfgs(name).items():
            cfgs[f"{timm_name}.{tag}" if tag else timm_name] = cfg
    module = sys.modules[__name__]
    module.default_cfgs = {**getattr(module, "default_cfgs", {}), **generate_default_cfgs(cfgs)}  # timm reads it
    for name, timm_name in new.items():
        register_model(_entrypoint(name, timm_name))
        _registered[name] = timm_name


class _AfterTimm(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``timm`` is about to be imported, it wraps the real loader so that sknet's
    models are registered right after timm's own (then it leaves sys.meta_path)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                _register_quietly()

            spec.loader.exec_module = exec_module
        return spec


def _register_quietly() -> None:
    try:
        register_all()
    except Exception as err:  # a timm this code does not know: say so, never break `import timm`
        warnings.warn(f"sknet could not register its models in timm {_timm_version()}: {err}", stacklevel=3)


def _timm_version() -> str:
    return getattr(sys.modules.get("timm"), "__version__", "?")


def register_when_timm_is_imported() -> None:
    """Register now if timm is imported, else as soon as it is (``import sknet`` does not import timm)."""
    if "timm.models" in sys.modules:
        _register_quietly()
    elif importlib.util.find_spec("timm") is not None and not any(isinstance(f, _AfterTimm) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTimm())
