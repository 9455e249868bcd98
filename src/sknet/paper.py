"""Figures reported by the paper (and the authors' released definitions), for side-by-side checks.

Sources: the paper (arXiv:1903.06586), the authors' released Caffe model definitions and public model zoos.
``confidence``: "2" two sources agree, "1" one source, "?" uncertain (treat as an approximate target). MACs
are multiply-accumulates (the paper's "GFLOPs"/"MFLOPs" are MACs).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperFigures:
    params: float | None  # parameters, as printed (e.g. 27.5e6)
    macs: float | None  # multiply-accumulates at the native resolution
    top1_err: float | None = None  # single-crop top-1 error %, native resolution (CIFAR: CIFAR-10)
    top1_err_320: float | None = None  # ImageNet 320×320 crop
    confidence: str = "2"  # of every figure, unless one of the two below says otherwise
    source: str = "paper Table 2"
    params_confidence: str | None = None
    macs_confidence: str | None = None
    cifar100_err: float | None = None
    note: str = ""

    @property
    def params_conf(self) -> str:
        return self.params_confidence or self.confidence

    @property
    def macs_conf(self) -> str:
        return self.macs_confidence or self.confidence


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


_T5 = "paper Table 5 (CIFAR; error % on CIFAR-10)"
CIFAR: dict[str, PaperFigures] = {
    "resnext29_16x32d": PaperFigures(25.2e6, None, 3.87, confidence="?", source=_T5, cifar100_err=18.56),
    "resnext29_8x64d": PaperFigures(34.4e6, None, 3.65, source=_T5, cifar100_err=17.77),
    "resnext29_16x64d": PaperFigures(68.1e6, None, 3.58, source=_T5, cifar100_err=17.31),
    "senet29": PaperFigures(35.0e6, None, 3.68, source=_T5, cifar100_err=17.78, note="SE on ResNeXt-29 8×64d"),
    "sknet29": PaperFigures(
        27.7e6, None, 3.47, source=_T5, cifar100_err=17.33, note="ResNeXt-29 16×32d with SK G=32: no config gives 27.7M"
    ),
}

_T4 = "paper Table 4 (ShuffleNetV2, ImageNet)"
LIGHTWEIGHT: dict[str, PaperFigures] = {
    "shufflenetv2_050": PaperFigures(1.40e6, 40.36e6, 38.41, confidence="?", source=_T4),
    "shufflenetv2_050_se": PaperFigures(1.56e6, 40.85e6, 36.34, confidence="?", source=_T4),
    "shufflenetv2_050_sk": PaperFigures(1.48e6, 42.58e6, 35.35, confidence="?", source=_T4),
    "shufflenetv2_100": PaperFigures(2.45e6, 140.35e6, 30.57, confidence="?", source=_T4),
    "shufflenetv2_100_se": PaperFigures(2.76e6, 141.73e6, 29.47, confidence="?", macs_confidence="1", source=_T4),
    "shufflenetv2_100_sk": PaperFigures(2.63e6, 145.66e6, 28.36, confidence="?", macs_confidence="1", source=_T4),
}

_T67 = "paper Tables 6 and 7 (ImageNet ablations)"
ABLATION: dict[str, PaperFigures] = {
    "sknet50_k3": PaperFigures(25.0e6, 4.24e9, 22.23, source=_T67, note="= ResNeXt-50"),
    "sknet50_k3k5_sum": PaperFigures(None, None, 21.76, confidence="?", source=_T67),
    "sknet50_k3k5k7": PaperFigures(None, None, 20.76, source=_T67),
}

TABLES: dict[str, dict[str, PaperFigures]] = {
    "imagenet": PAPER,
    "cifar": CIFAR,
    "lightweight": LIGHTWEIGHT,
    "ablation": ABLATION,
}


def paper_figures(name: str) -> PaperFigures | None:
    """The paper's figures for a registered model name, from whichever table has it."""
    for table in TABLES.values():
        if name in table:
            return table[name]
    return None
