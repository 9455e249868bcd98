"""Inference fusion: fold every BatchNorm into the convolution before it.

After `fuse_for_inference(model)` each conv → BN pair (SK paths, 1×1 reduce and expand, projection
shortcuts, stem, and the SK fuse-step 1×1 → BN) is one conv with a bias: fewer ops and memory passes,
same function up to float rounding. The model is put in eval mode; fused models are for inference only.
"""

from __future__ import annotations

import torch
from torch import nn

from sknet.layers.conv_bn_act import ConvBNAct
from sknet.layers.selective_kernel import Fuse


@torch.no_grad()
def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """conv ← BN ∘ conv, using BN's running statistics (in place; conv gains a bias)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype))
    new_bias = (bias - bn.running_mean) * scale + bn.bias
    conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype))


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fold all BN layers of sknet blocks into their convs, in place; returns the model in eval mode."""
    model.eval()
    for module in model.modules():
        if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
            fold_bn_into_conv(module.conv, module.bn)
            module.bn = nn.Identity()
        elif isinstance(module, Fuse) and isinstance(module.bn, nn.BatchNorm2d):
            fold_bn_into_conv(module.fc, module.bn)
            module.bn = nn.Identity()
    return model


def is_fused(model: nn.Module) -> bool:
    return not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
