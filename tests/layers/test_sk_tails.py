"""The fast tails behind their declared interface: each equals the layer's own forward or declines, for every
option of the layer (tests/layers/tail_sweep.py), and a changed Split reaches whichever tail runs.

The CUDA tail runs the same sweep in Triton's interpreter: tests/kernels/test_sk_tail_triton.py ("sweep").
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sknet import ConfigError, SKConv2d
from sknet.layers import sk_tails
from tests.layers import tail_sweep
from tests.reference import reference_sk_conv


def test_the_lean_tail_equals_the_plain_forward_or_declines_for_every_option():
    outcomes = tail_sweep.sweep("lean", "cpu")
    # Where it is meant to run, it did: CPU training of BatchNorm2d paths with attention, fp32 and fp64,
    # any number of paths; nowhere else (frozen, SyncBatchNorm and GroupNorm paths, evaluation, autocast).
    want = {
        (norm, layout, "train", precision)
        for norm in ("batchnorm",)
        for layout in ("M1", "M2", "M3", "M4")
        for precision in ("fp64", "fp32")
    }
    assert tail_sweep.ran(outcomes) == want


def test_every_tail_states_its_reason_and_where_its_gain_is_measured():
    names = [tail.name for tail in sk_tails.TAILS]
    assert names == ["fused", "lean"]
    for tail in sk_tails.TAILS:
        assert tail.reason and tail.gain
    layer = SKConv2d(8, 8, groups=2, min_dim=4)
    convs = [path.conv(torch.randn(2, 8, 4, 4)) for path in layer.paths]
    reasons = sk_tails.reasons(layer, convs)
    assert reasons["lean"] is None and "CUDA" in reasons["fused"]
    layer.eval()
    with torch.no_grad():
        assert "gradient" in sk_tails.reasons(layer, convs)["lean"]


def test_a_layer_chooses_which_tails_it_may_use():
    layer = SKConv2d(8, 8, groups=2, min_dim=4)
    x = torch.randn(2, 8, 4, 4)
    assert layer.tail_for(x) == "lean"
    layer.tails = ()
    assert layer.tail_for(x) == "plain"
    layer.tails = "lean"
    assert layer.tails == ("lean",) and layer.tail_for(x) == "lean"
    with pytest.raises(ConfigError, match=r"unknown SK tail .laen.: the tails are fused, lean"):
        layer.tails = ("laen",)
    assert copy.deepcopy(layer).tails == ("lean",)


class _Doubled(nn.Module):
    """A changed Split: a path convolution whose output is doubled (= the same layer with weights × 2)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * self.conv(x)


@pytest.mark.parametrize(("training", "tail"), [(True, "lean"), (True, "plain"), (False, "plain")])
def test_a_changed_split_reaches_whichever_tail_runs(training, tail):
    torch.manual_seed(0)
    ref = SKConv2d(16, 24, stride=2, groups=4, min_dim=8).double().train(training)
    with torch.no_grad():
        for bn in [p.bn for p in ref.paths] + [ref.fuse.bn]:
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-0.2, 0.2), bn.running_var.uniform_(0.5, 2.0)
    layer = copy.deepcopy(ref)
    for path in layer.paths:
        path.conv = _Doubled(path.conv)
    with torch.no_grad():
        for path in ref.paths:
            path.conv.weight.mul_(2)
    layer.tails = None if tail == "lean" else ()
    x = torch.randn(4, 16, 9, 7, dtype=torch.double, requires_grad=True)
    assert layer.tail_for(x) == tail
    out = layer(x)
    want, _ = reference_sk_conv(ref, x, training)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, grad)
    (gx_want,) = torch.autograd.grad(want, x, grad)
    torch.testing.assert_close(gx, gx_want, rtol=1e-9, atol=1e-9)


def test_a_path_norm_no_tail_knows_runs_on_the_layers_own_forward():
    torch.manual_seed(0)
    layer = SKConv2d(16, 24, groups=4, min_dim=8).double().train()
    for path in layer.paths:
        path.bn = nn.GroupNorm(4, 24).double()  # replaced after construction: the contract sees it
    x = torch.randn(4, 16, 8, 8, dtype=torch.double, requires_grad=True)
    assert layer.contract().path_norm.value == "other"
    assert layer.tail_for(x) == "plain"
    out = layer(x)
    us = [path.act(path.bn(path.conv(x))) for path in layer.paths]
    a = layer.select(layer.fuse(sum(us).mean((2, 3), keepdim=True)))
    want = sum(u * a[:, m, :, None, None] for m, u in enumerate(us))
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)


def test_the_contract_follows_the_modules():
    layer = SKConv2d(16, 16, groups=4, min_dim=8)
    c = layer.contract()
    assert (c.path_norm.value, c.path_relu, c.attention, c.sums_to_one, c.hooked, c.closed_form) == (
        "batch", True, True, True, False, True,
    )  # fmt: skip
    layer.eval()
    assert layer.contract().path_norm.value == "affine"
    layer.fuse.act = nn.GELU()
    assert not layer.contract().closed_form
    handle = layer.select.register_forward_hook(lambda m, a, out: None)
    assert layer.contract().hooked
    handle.remove()
    assert not SKConv2d(16, 16, groups=4, aggregation="sum").contract().attention
    frozen = SKConv2d(16, 16, groups=4, min_dim=8, norm_layer="frozen").train()
    assert frozen.contract().path_norm.value == "affine" and frozen.contract().closed_form
