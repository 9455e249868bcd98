"""Figures reported by the paper (and the authors' released definitions), for side-by-side checks.

Source: ../shared/reference/sknet-paper.md. ``confidence`` follows it: "2" two sources agree, "1" one
source, "?" uncertain (treat as an approximate target). MACs are multiply-accumulates (the paper's
"GFLOPs"/"MFLOPs" are MACs).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperFigures:
    params: float | None  # parameters, as printed (e.g. 27.5e6)
    macs: float | None  # multiply-accumulates at the native resolution
    top1_err: float | None = None  # single-crop top-1 error %, native resolution
    top1_err_320: float | None = None  # ImageNet 320×320 crop
    confidence: str = "2"
    source: str = "paper Table 2"


PAPER: dict[str, PaperFigures] = {
    "resnext50": PaperFigures(25.0e6, 4.24e9, 22.23, 21.05),
    "senet50": PaperFigures(27.7e6, 4.25e9, 21.12, 19.71),
    "sknet50": PaperFigures(27.5e6, 4.47e9, 20.79, 19.32),
    "resnext101": PaperFigures(44.3e6, 7.99e9, 21.11, 19.86),
    "senet101": PaperFigures(49.2e6, 8.00e9, 20.58, 18.61),
    "sknet101": PaperFigures(48.9e6, 8.46e9, 20.19, 18.40),
}

# Exact parameter counts of the released / standard definitions at 1000 classes.
EXACT_PARAMS: dict[str, int] = {
    "sknet50": 27_479_784,
    "resnext50": 25_028_904,
    "senet50": 27_559_896,
    "sknet101": 48_736_040,  # d = 32 in conv3 (layer2); the released prototxt has d = 16 there: 48,686,760
    "resnext101": 44_177_704,
    "senet101": 48_955_416,
}
