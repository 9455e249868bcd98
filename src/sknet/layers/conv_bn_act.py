"""Conv → BN → ReLU, the building brick of every path, stem and plain middle."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from sknet.layers.norm import DEFAULT_NORM, make_norm


class SubsampledDilatedConv2d(nn.Conv2d):
    """A k×k conv with stride = dilation = d > 1, computed as a plain stride-1 conv on x[..., ::d, ::d].

    Exactly the same function and parameters as ``nn.Conv2d(..., stride=d, dilation=d, padding=d·(k−1)/2)``:
    output pixel o reads inputs d·o + d·(j − (k−1)/2), which are all on the subsampled grid. It exists
    because oneDNN's dilated backward is several times slower than the plain one on CPUs (the SK "5×5" path
    of every stride-2 unit: benchmarks/RESULTS.md, 2026-11-22); the state dict is unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, groups: int = 1):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            dilation,
            dilation * (kernel_size - 1) // 2,
            dilation,
            groups,
            bias=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation[0]
        pad = (self.kernel_size[0] - 1) // 2
        # A dense copy (a quarter of x for d = 2) in x's memory format: the strided view would be seen as
        # NCHW and drag the rest of the path out of channels_last.
        # (FX symbolic tracing has no layout to look at: the traced graph keeps the strided view.)
        if isinstance(x, torch.fx.Proxy):
            x = x[:, :, ::d, ::d]
        else:
            fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
            x = x[:, :, ::d, ::d].contiguous(memory_format=fmt)
        return F.conv2d(x, self.weight, self.bias, (1, 1), (pad, pad), (1, 1), self.groups)  # lists: torch.ao


def make_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
) -> nn.Conv2d:
    """Conv2d without bias and with "same" padding (odd kernels); the fastest exact form for the config."""
    if stride == dilation > 1:
        return SubsampledDilatedConv2d(in_channels, out_channels, kernel_size, dilation, groups)
    padding = dilation * (kernel_size - 1) // 2
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False)


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) → norm (BatchNorm2d unless `norm_layer` says otherwise, see :mod:`sknet.layers.norm`)
    → optional activation (ReLU unless `act_layer` says otherwise, e.g. nn.ReLU6 in MobileNetV2), with "same"
    padding for odd kernels. The norm is the child ``bn`` whatever its kind (weight names stay put).

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
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: object = DEFAULT_NORM,
    ) -> None:
        layers: list[tuple[str, nn.Module]] = [
            ("conv", make_conv(in_channels, out_channels, kernel_size, stride, dilation, groups)),
            ("bn", make_norm(norm_layer, out_channels)),
        ]
        if act:
            layers.append(("act", act_layer(inplace=True)))
        super().__init__(OrderedDict(layers))
