"""Weights for another number of classes or input channels: what fine-tuning from any weights needs.

The rules are timm's (``timm.models.adapt_input_conv``, ``load_pretrained``): the classifier is
re-initialised when the class count differs; the first conv of an RGB model is summed over its input
channels for one channel, and tiled then rescaled by 3 / in_chans for more, so that an image repeated
over the channels gives the same first-layer response. (timm tiles only from 3 channels; here any count
is tiled the same way, e.g. a 1-channel model's conv to 3 channels, each a third.)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import torch

FIRST_CONV = "stem.conv.conv"  # every family's stem starts with a ConvBNAct named stem.conv
CLASSIFIER = "fc"


def adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """A first-conv weight (O, I, kH, kW) for `in_chans` inputs: summed over I for 1, else tiled over I
    and scaled by I / in_chans (timm's rule); unchanged when I == in_chans. Keeps the dtype.

    Example: an RGB stem (64, 3, 7, 7) → (64, 1, 7, 7), the three channels' weights added."""
    channels = weight.shape[1]
    if in_chans == channels:
        return weight
    adapted = weight.float()
    if in_chans == 1:
        adapted = adapted.sum(dim=1, keepdim=True)
    else:
        adapted = adapted.repeat(1, math.ceil(in_chans / channels), 1, 1)[:, :in_chans] * (channels / in_chans)
    return adapted.to(weight.dtype)


def channel_stats(values: Sequence[float], channels: int) -> tuple[float, ...]:
    """Per-channel statistics (mean or std) for `channels` inputs: as given when they fit, else their
    average for every channel (what an adapted first conv was trained with, on average)."""
    values = tuple(float(v) for v in values)
    if len(values) == channels:
        return values
    return (sum(values) / len(values),) * channels


def fit_state(
    state: Mapping[str, torch.Tensor],
    own: Mapping[str, torch.Tensor],
    source: str,
    classes: bool = True,
    chans: bool = True,
    quiet: bool = False,
) -> dict[str, torch.Tensor]:
    """`state` made to fit a model whose state dict is `own`: with `classes`, a classifier of another
    class count is replaced by the model's own (freshly initialised) one; with `chans`, a first conv of
    another input-channel count is adapted. Says what it did in one UserWarning (unless `quiet`): a Python
    session shows it, as the command line does; anything else that differs is left for the strict load to
    report."""
    state = dict(state)
    notes = []
    conv = f"{FIRST_CONV}.weight"
    if chans and conv in state and conv in own:
        have, want = state[conv].shape, own[conv].shape
        if have[1] != want[1] and (have[0], *have[2:]) == (want[0], *want[2:]):
            state[conv] = adapt_input_conv(want[1], state[conv])
            notes.append(f"first conv adapted from {have[1]} to {want[1]} input channels")
    weight = f"{CLASSIFIER}.weight"
    if classes and weight in state and weight in own and state[weight].shape[0] != own[weight].shape[0]:
        have_classes = state[weight].shape[0]
        for key in (weight, f"{CLASSIFIER}.bias"):
            if key in own:
                state[key] = own[key]
        notes.append(f"classifier re-initialised for {own[weight].shape[0]} classes (the weights have {have_classes})")
    if notes and not quiet:
        warnings.warn(f"{source}: {'; '.join(notes)}", UserWarning, stacklevel=2)
    return state
