import pytest
import torch

import sknet
from sknet.bn_folding import fuse_for_inference, is_fused
from tests.layers.test_sk_conv import _randomise_bn


@pytest.mark.parametrize(("name", "size"), [("sknet26", 64), ("resnext26", 64), ("senet26", 64), ("sknet_tiny", 28)])
def test_fused_model_matches_unfused(name, size):
    torch.manual_seed(0)
    model = sknet.create_model(name)
    _randomise_bn(model)
    model.eval()
    x = torch.randn(2, model.in_chans, size, size)
    with torch.no_grad():
        expect = model(x)
        fused = fuse_for_inference(model)
        got = fused(x)
    assert is_fused(fused)
    assert (got - expect).abs().max() <= 1e-4 * expect.abs().max()


def test_fused_sk_layer_keeps_channels_last_and_attention():
    layer = sknet.SKConv2d(64, 64).eval()
    _randomise_bn(layer)
    x = torch.randn(2, 64, 8, 8).to(memory_format=torch.channels_last)
    with torch.no_grad():
        expect = layer(x)
        layer = fuse_for_inference(layer.to(memory_format=torch.channels_last))
        got = layer(x)
    torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-5)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert layer.paths[0].conv.bias is not None and layer.fuse.fc.bias is not None
