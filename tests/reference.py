"""A deliberately plain implementation of the paper's SK equations, used as ground truth in tests.

It reads the weights of an `SKConv2d` and recomputes the layer the textbook way: stack the paths,
sum, pool, fc, BN, ReLU, one fc per path, softmax over paths, weighted sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sknet.layers import SKConv2d


def _bn(x: torch.Tensor, bn: torch.nn.BatchNorm2d, training: bool) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias, training, 0.0, bn.eps)


def reference_sk_conv(layer: SKConv2d, x: torch.Tensor, training: bool = False):
    """Returns (V, attention (N, M, C) or None)."""
    paths = []
    for path in layer.paths:
        conv = path.conv
        u = F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        paths.append(F.relu(_bn(u, path.bn, training)))
    stacked = torch.stack(paths, dim=1)  # (N, M, C, H, W)
    if layer.select is None:
        return stacked.sum(1), None
    u_sum = stacked.sum(1)
    s = u_sum.mean(dim=(2, 3))  # (N, C)
    z = F.relu(_bn((s @ layer.fuse.fc.weight.flatten(1).T)[..., None, None], layer.fuse.bn, training))
    z = z.flatten(1)  # (N, d)
    m, c = layer.num_paths, layer.out_channels
    a_blocks = layer.select.fc.weight.flatten(1).view(m, c, -1)  # A_m: C×d each
    logits = torch.stack([z @ a_blocks[i].T for i in range(m)], dim=1)  # (N, M, C)
    attention = torch.softmax(logits, dim=1)
    v = (stacked * attention[..., None, None]).sum(1)
    return v, attention
