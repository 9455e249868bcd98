import pytest
import torch

from sknet import BlockConfig, Bottleneck, ConfigError, SKConv2d
from sknet.layers import Middle, SqueezeExcite


@pytest.mark.parametrize("config", [BlockConfig(), BlockConfig(se_reduction=16), BlockConfig(middle="sk")])
@pytest.mark.parametrize("stride", [1, 2])
def test_bottleneck_shapes_and_stride_placement(config, stride):
    block = Bottleneck(64, 128, 256, stride=stride, config=config).eval()
    out = block(torch.randn(2, 64, 9, 9))
    assert out.shape == (2, 256, (9 - 1) // stride + 1, (9 - 1) // stride + 1)
    # The 1×1 reduce never strides; the middle and the projection shortcut do.
    assert block.conv1.conv.stride == (1, 1)
    assert block.downsample.conv.stride == (stride, stride)
    if isinstance(block.conv2, SKConv2d):
        assert all(p.conv.stride == (stride, stride) for p in block.conv2.paths)
    else:
        assert block.conv2.conv.stride == (stride, stride)
    assert isinstance(block.se, SqueezeExcite) == (config.se_reduction is not None)


def test_identity_shortcut_when_shapes_match():
    block = Bottleneck(256, 128, 256, config=BlockConfig(middle=Middle.SK))
    assert block.downsample is None


def test_zero_init_last_bn_makes_block_identity_before_relu():
    block = Bottleneck(256, 128, 256, config=BlockConfig(middle="sk")).eval()
    block.zero_init_last_bn()
    x = torch.rand(2, 256, 5, 5)  # non-negative: ReLU(x + 0) == x
    torch.testing.assert_close(block(x), x)


def test_block_config_normalises_and_validates():
    config = BlockConfig(middle="sk", branches="3,5,7", aggregation="sum")
    assert config.middle is Middle.SK and len(config.branches) == 3
    with pytest.raises(ConfigError, match="middle must be one of"):
        BlockConfig(middle="se")
    with pytest.raises(ConfigError, match="width=100 is not divisible by groups=32"):
        Bottleneck(64, 100, 256)
