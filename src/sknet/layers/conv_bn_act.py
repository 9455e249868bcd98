"""Conv → BN → ReLU, the building brick of every path, stem and plain middle."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) → BatchNorm2d → optional ReLU, with "same" padding for odd kernels.

    (N, C_in, H, W) → (N, C_out, ⌊(H − 1)/stride⌋ + 1, ⌊(W − 1)/stride⌋ + 1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers: list[tuple[str, nn.Module]] = [
            (
                "conv",
                nn.Conv2d(
                    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False
                ),
            ),
            ("bn", nn.BatchNorm2d(out_channels)),
        ]
        if act:
            layers.append(("act", nn.ReLU(inplace=True)))
        super().__init__(OrderedDict(layers))
