"""One Split feeds every tail: a change to the Split (a subclass overriding ``split`` or ``parts``) reaches
whichever tail runs, and a tail that was not written for a changed path declines.

(The CUDA tails, fused and select-kernel, are checked the same way in Triton's interpreter:
tests/kernels/sk_tail_parity.py, ``check_split_reaches_every_tail``.)
"""

import copy

import pytest
import torch
from torch import nn

from sknet import SKConv2d
from tests.reference import reference_sk_conv


class Doubled(SKConv2d):
    """A changed Split: every path convolution's output doubled (= the same layer with weights ×2)."""

    def split(self, x):
        return [2 * c for c in super().split(x)]


def _pair(training: bool):
    torch.manual_seed(0)
    layer = Doubled(16, 24, stride=2, groups=4, min_dim=8).double().train(training)
    with torch.no_grad():
        for bn in [p.bn for p in layer.paths] + [layer.fuse.bn]:
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-0.2, 0.2), bn.running_var.uniform_(0.5, 2.0)
    ref = SKConv2d(16, 24, stride=2, groups=4, min_dim=8).double().train(training)
    ref.load_state_dict(layer.state_dict())
    with torch.no_grad():
        for path in ref.paths:
            path.conv.weight.mul_(2)
    return layer, ref


@pytest.mark.parametrize(
    ("training", "lean", "tail"), [(True, True, "lean"), (True, False, "plain"), (False, True, "plain")]
)
def test_a_changed_split_reaches_the_cpu_tails(training, lean, tail):
    layer, ref = _pair(training)
    layer.lean_training = lean
    x = torch.randn(4, 16, 9, 7, dtype=torch.double, requires_grad=True)
    assert layer.tail_for(x) == tail
    out = layer(x)
    want, _ = reference_sk_conv(ref, x, training)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, grad)
    (gx_want,) = torch.autograd.grad(want, x, grad)
    torch.testing.assert_close(gx, gx_want, rtol=1e-9, atol=1e-9)


class GroupNormPaths(SKConv2d):
    """A changed path: GroupNorm in place of each path's BatchNorm2d, handed to the tails by ``parts``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for path in self.paths:
            path.bn = nn.GroupNorm(4, self.out_channels)


def test_a_path_the_fast_tails_were_not_written_for_makes_them_decline():
    torch.manual_seed(0)
    layer = GroupNormPaths(16, 24, groups=4, min_dim=8).double().train()
    x = torch.randn(4, 16, 8, 8, dtype=torch.double, requires_grad=True)
    assert layer.tail_for(x) == "plain"  # the lean tail hard-codes BatchNorm2d
    out = layer(x)
    us = [path.act(path.bn(path.conv(x))) for path in layer.paths]
    a = layer.select(layer.fuse(sum(us).mean((2, 3), keepdim=True)))
    want = sum(u * a[:, m, :, None, None] for m, u in enumerate(us))
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)


def test_every_tail_is_named_and_plain_is_last():
    from sknet.layers.sk import dispatch

    names = [tail.NAME for tail in dispatch.TAILS]
    assert names == ["fused", "select-kernel", "lean", "plain"]
    layer = SKConv2d(8, 8, groups=2, min_dim=4)
    parts, convs = layer.parts(), layer.split(torch.randn(2, 8, 4, 4))
    assert dispatch.TAILS[-1].applies(parts, convs)
    assert copy.copy(parts) == parts  # a plain record of modules, no tensors
