"""timm's ResNeXt / SE-ResNeXt / SK-ResNeXt state dicts ↔ sknet.

timm's ``skresnext50_32x4d`` has the topology of SKNet-50 (80.17% top-1 with timm's recipe): the same
paths, fuse and select, with other module names. The key map is a handful of renames.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Mapping

import torch
from torch import nn

from sknet.data.config import DataConfig
from sknet.errors import CheckpointError, ConfigError, clip
from sknet.models.hub_names import TIMM_COUNTERPARTS

# sknet name → timm name (same topology, same parameter count).
SKNET_NAMES = {v: k for k, v in TIMM_COUNTERPARTS.items()}

_RENAMES = [
    (re.compile(r"^conv1\.weight$"), "stem.conv.conv.weight"),
    (re.compile(r"^bn1\.(.+)$"), r"stem.conv.bn.\1"),
    # timm's plain ResNet bottleneck: convN / bnN
    (re.compile(r"^(layer\d+\.\d+)\.conv(\d)\.weight$"), r"\1.conv\2.conv.weight"),
    (re.compile(r"^(layer\d+\.\d+)\.bn(\d)\.(.+)$"), r"\1.conv\2.bn.\3"),
    (re.compile(r"^(layer\d+\.\d+)\.downsample\.0\.(.+)$"), r"\1.downsample.conv.\2"),
    (re.compile(r"^(layer\d+\.\d+)\.downsample\.1\.(.+)$"), r"\1.downsample.bn.\2"),
    # timm's SelectiveKernel: attn.fc_reduce / attn.bn / attn.fc_select
    (re.compile(r"^(layer\d+\.\d+\.conv2)\.attn\.fc_reduce\.(.+)$"), r"\1.fuse.fc.\2"),
    (re.compile(r"^(layer\d+\.\d+\.conv2)\.attn\.bn\.(.+)$"), r"\1.fuse.bn.\2"),
    (re.compile(r"^(layer\d+\.\d+\.conv2)\.attn\.fc_select\.(.+)$"), r"\1.select.fc.\2"),
]


def timm_key(key: str) -> str:
    """sknet's name for one timm state-dict key (keys that need no rename come back unchanged)."""
    for pattern, replacement in _RENAMES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return key


def from_timm_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ResNeXt / SE-ResNeXt / SK-ResNeXt state dict renamed to sknet's keys."""
    return {timm_key(k): v for k, v in state.items()}


def sknet_name(timm_name: str) -> str:
    try:
        return SKNET_NAMES[timm_name]
    except KeyError:
        raise ConfigError(
            f"no sknet model matches timm's {timm_name!r}; convertible: {', '.join(sorted(SKNET_NAMES))}"
        ) from None


def timm_name(name: str) -> str:
    try:
        return TIMM_COUNTERPARTS[name]
    except KeyError:
        raise ConfigError(
            f"timm has no weights for sknet's {name!r}; models with a timm counterpart: {', '.join(TIMM_COUNTERPARTS)}"
        ) from None


def _import_timm():
    try:
        import timm
    except ImportError:
        raise ConfigError("timm is not installed: pip install 'sknet[timm]' (or pip install timm)") from None
    return timm


def convert_timm_model(model: nn.Module, name: str) -> nn.Module:
    """Our `name` model holding the weights of the timm model `model` (eval mode), with its preprocessing."""
    ours = convert_timm_state(model.state_dict(), name)
    ours.pretrained_cfg = getattr(model, "pretrained_cfg", None) or {}
    return ours


def convert_timm_state(
    timm_state: Mapping[str, torch.Tensor], name: str, num_classes: int | None = None, in_chans: int | None = None
) -> nn.Module:
    """Our `name` model holding a timm state dict (e.g. read from a downloaded file), in eval mode.

    `num_classes` / `in_chans` other than the weights' re-initialise the classifier / adapt the first conv
    (:func:`sknet.models.finetune.fit_state`). The model's ``data_config`` is timm's own pretrained_cfg for
    the model (read from timm's registry, no download) when timm is installed, else ImageNet's defaults.
    """
    from sknet.models import create_model
    from sknet.models.finetune import fit_state
    from sknet.weights import load_state_into, strip_prefixes

    state = from_timm_state(strip_prefixes(dict(timm_state)))
    source = f"timm's {TIMM_COUNTERPARTS.get(name, 'model')} weights"
    options = {"num_classes": num_classes or _classes_of(state), "in_chans": in_chans or _chans_of(state)}
    ours = create_model(name, **{k: v for k, v in options.items() if v is not None})
    load_state_into(ours, fit_state(state, ours.state_dict(), source), source)
    ours.pretrained_cfg = timm_pretrained_cfg(name)
    ours.weights_meta = {"model": name, "source": f"timm:{TIMM_COUNTERPARTS.get(name, name)}"}
    return ours.eval()


def _classes_of(state: Mapping[str, torch.Tensor]) -> int | None:
    return int(state["fc.weight"].shape[0]) if "fc.weight" in state else None


def _chans_of(state: Mapping[str, torch.Tensor]) -> int | None:
    conv = state.get("stem.conv.conv.weight")
    return int(conv.shape[1]) if conv is not None else None


def timm_pretrained_cfg(name: str) -> dict:
    """timm's own pretrained_cfg of `name`'s counterpart (its default pretrained tag), from timm's registry
    without any download; {} (ImageNet's defaults) without timm."""
    try:
        import timm.models
    except ImportError:
        return {}
    cfg = timm.models.get_pretrained_cfg(timm_name(name))
    return cfg.to_dict() if cfg is not None else {}


def fetch_timm_weights(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict in sknet's keys, record) of timm's pretrained ImageNet weights of `name`'s counterpart,
    fetched by timm (its cache first; the internet once). The record is timm's preprocessing for those weights
    (and the weights' tag as their source). Without a network (checked in 3 s) only timm's cache is tried, so
    that an offline machine gets its answer at once instead of after retries."""
    timm = _import_timm()
    source = timm_name(name)
    try:
        with _offline_unless_reachable():
            model = timm.create_model(source, pretrained=True)
    except Exception as err:  # network, hub and cache errors come in many types
        raise CheckpointError(
            f"could not fetch timm's pretrained {source} ({type(err).__name__}: {clip(err)}). "
            f"Pretrained weights need the internet once (then timm's cache); offline, download {source}'s "
            f"weights elsewhere and convert the file: sknet convert --from timm {source} --checkpoint FILE "
            "--out OUT.safetensors"
        ) from None
    cfg = getattr(model, "pretrained_cfg", None) or {}
    meta = {
        **timm_data_config(cfg).to_metadata(),
        "model": name,
        "source": f"timm:{cfg.get('architecture', source)}" + (f".{cfg['tag']}" if cfg.get("tag") else ""),
    }
    return from_timm_state(model.state_dict()), meta


def load_timm_pretrained(name: str) -> nn.Module:
    """Our `name` with timm's pretrained ImageNet weights (:func:`fetch_timm_weights`), in eval mode."""
    from sknet.models import create_model

    return create_model(name, pretrained="timm").eval()


def timm_data_config(cfg: dict) -> DataConfig:
    """timm's pretrained_cfg (input_size, crop_pct, crop_mode, interpolation, mean, std) as our DataConfig."""
    from sknet.models.pretrained_cfg import data_config_from_pretrained_cfg

    return data_config_from_pretrained_cfg(cfg)


@contextlib.contextmanager
def _offline_unless_reachable(host: str = "huggingface.co", timeout: float = 3.0):
    try:
        socket.create_connection((host, 443), timeout).close()
        reachable = True
    except OSError:
        reachable = False
    try:
        import huggingface_hub.constants as hub
    except ImportError:
        yield
        return
    previous = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = previous or not reachable
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = previous
