"""Property-based tests (hypothesis): SKConv2d and the bottleneck over random configurations and inputs."""

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sknet import BlockConfig, Bottleneck, ConfigError, SKConv2d
from sknet.analysis import record_attention
from tests.layers.test_sk_conv import _randomise_bn
from tests.reference import reference_sk_conv

settings.register_profile("ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@st.composite
def sk_layers(draw):
    """(layer kwargs, batch, height, width, training) with valid channels, groups, paths and strides."""
    groups = draw(st.sampled_from([1, 2, 4]))
    branches = [
        (draw(st.sampled_from([1, 3, 5])), draw(st.integers(1, 3)))  # kernel, dilation
        for _ in range(draw(st.integers(1, 3)))
    ]
    kwargs = dict(
        in_channels=groups * draw(st.integers(1, 4)),
        out_channels=groups * draw(st.integers(1, 4)),
        stride=draw(st.integers(1, 3)),
        groups=groups,
        branches=branches,
        min_dim=draw(st.integers(1, 8)),
        aggregation=draw(st.sampled_from(["sk", "sum"])),
    )
    training = draw(st.booleans())
    batch = draw(st.integers(2, 3)) if training else draw(st.integers(1, 3))
    return kwargs, batch, draw(st.integers(1, 9)), draw(st.integers(1, 9)), training


@given(sk_layers(), st.integers(0, 2**16))
@settings(max_examples=40)
def test_sk_conv_shape_attention_gradients_and_reference(case, seed):
    kwargs, n, h, w, training = case
    torch.manual_seed(seed)
    layer = SKConv2d(**kwargs).double()
    _randomise_bn(layer)
    layer.train(training)
    x = torch.randn(n, kwargs["in_channels"], h, w, dtype=torch.double, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)

    if layer.select is not None:
        with record_attention(layer) as rec:
            out = layer(x)
        attention = rec.attention("SK_1_1").double()
    else:
        out = layer(x)
    s = kwargs["stride"]
    assert out.shape == (n, kwargs["out_channels"], (h - 1) // s + 1, (w - 1) // s + 1)

    ref, ref_attention = reference_sk_conv(layer, x_ref, training)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    if layer.select is not None:
        assert attention.shape == (n, layer.num_paths, kwargs["out_channels"])
        torch.testing.assert_close(attention.sum(1), torch.ones(n, kwargs["out_channels"], dtype=torch.double))
        torch.testing.assert_close(attention, ref_attention, rtol=1e-9, atol=1e-9)

    grad = torch.randn_like(out)
    params = list(layer.parameters())
    got = torch.autograd.grad(out, [x, *params], grad, allow_unused=True)
    want = torch.autograd.grad(ref, [x_ref, *params], grad, allow_unused=True)
    for g, r in zip(got, want, strict=True):
        if g is None or r is None:
            assert (g is None or not g.any()) and (r is None or not r.any())
            continue
        assert g.isfinite().all()
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-9)


@given(
    channels=st.integers(1, 64),
    groups=st.integers(2, 16),
    kernel=st.integers(1, 7),
    dilation=st.integers(-1, 3),
    stride=st.integers(-1, 3),
)
def test_invalid_sk_configurations_are_rejected_at_construction(channels, groups, kernel, dilation, stride):
    valid = channels % groups == 0 and kernel % 2 == 1 and dilation >= 1 and stride >= 1
    build = lambda: SKConv2d(channels, channels, stride, groups, branches=[(3, 1), (kernel, dilation)])  # noqa: E731
    if valid:
        assert build().num_paths == 2
    else:
        with pytest.raises(ConfigError):
            build()


@st.composite
def bottlenecks(draw):
    groups = draw(st.sampled_from([1, 2, 4, 8]))
    middle = draw(st.sampled_from(["conv", "sk"]))
    config = BlockConfig(
        middle=middle,
        groups=groups,
        min_dim=draw(st.integers(1, 16)),
        se_reduction=draw(st.sampled_from([None, 2, 4])),
        branches=draw(st.sampled_from(["3", "3,5", "3,5,7", "3d1,5d1"])),
    )
    return (
        dict(
            in_channels=draw(st.integers(1, 24)),
            width=groups * draw(st.integers(1, 3)),
            out_channels=draw(st.integers(1, 24)),
            stride=draw(st.integers(1, 3)),
            config=config,
        ),
        draw(st.integers(1, 8)),
        draw(st.integers(1, 8)),
    )


@given(bottlenecks())
@settings(max_examples=30)
def test_bottleneck_shape_and_finite_gradients(case):
    kwargs, h, w = case
    block = Bottleneck(**kwargs).train()
    x = torch.randn(2, kwargs["in_channels"], h, w, requires_grad=True)
    out = block(x)
    s = kwargs["stride"]
    assert out.shape == (2, kwargs["out_channels"], (h - 1) // s + 1, (w - 1) // s + 1)
    out.square().sum().backward()
    assert x.grad.isfinite().all()
    assert all(p.grad is None or p.grad.isfinite().all() for p in block.parameters())
    assert (out >= 0).all()  # the unit ends in ReLU
