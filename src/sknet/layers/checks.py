"""Small validation helpers shared by the layers and models (clear errors instead of deep torch ones)."""

from __future__ import annotations

import torch

from sknet.errors import ConfigError, InputShapeError


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """Return `value` if it is an int ≥ `minimum`, else raise ConfigError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ConfigError(f"{name} must be ≥ {minimum}, got {value}")
    return value


def check_divisible(name: str, channels: int, groups: int) -> None:
    if channels % groups != 0:
        raise ConfigError(f"{name}={channels} is not divisible by groups={groups}")


def check_image_batch(x: torch.Tensor, channels: int, where: str, dtype: torch.dtype | None = None) -> None:
    """Raise InputShapeError unless `x` is a floating-point (N, channels, H, W) tensor, of `dtype` (the
    weights' dtype, None: any) outside autocast (which casts float32 inputs itself).

    Only Python-level shape checks: free at run time and transparent to torch.compile and tracing. Under
    FX symbolic tracing (torch.fx, torchvision's create_feature_extractor, torch.ao's prepare_fx) `x` is a
    Proxy with no shape to check: the check is left out of the traced graph, eager calls keep it.
    """
    if isinstance(x, torch.fx.Proxy):
        return
    if not isinstance(x, torch.Tensor):
        raise InputShapeError(f"{where} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise InputShapeError(
            f"{where} expects a 4-D input (N, C, H, W), got {x.dim()}-D input of shape {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        raise InputShapeError(
            f"{where} expects {channels} input channels, got {x.shape[1]} (input shape {tuple(x.shape)})"
        )
    if not x.is_floating_point():  # e.g. decoded uint8 pixels: torch's own message names no cause
        raise InputShapeError(
            f"{where} expects floating-point images, normalised as sknet.transforms(model) prepares them, got {x.dtype}"
        )
    if (
        dtype is not None
        and x.dtype != dtype
        and (x.dtype == torch.float64 or not torch.is_autocast_enabled(x.device.type))
    ):
        raise InputShapeError(
            f"{where} has {dtype} weights but got {x.dtype} input: x.to({dtype}) (or model.to({x.dtype}))"
        )
