"""An SK setting is declared once, as a BlockConfig field marked SK and a keyword of SKConv2d: every SK
family's builder takes it, the registry lists it, `sknet train --set` passes it. The example: timm's
``rd_divisor`` (``attn_divisor``)."""

import pytest
import torch

import sknet
from sknet.errors import ConfigError
from sknet.layers import BlockConfig, SKConv2d


@pytest.mark.parametrize(
    ("channels", "divisor", "dim"), [(64, 1, 4), (64, 8, 8), (200, 1, 12), (200, 8, 16), (72, 8, 8)]
)
def test_attn_divisor_rounds_d_as_timms_make_divisible(channels, divisor, dim):
    layer = SKConv2d(channels, channels, groups=8, reduction=16, min_dim=1, attn_divisor=divisor)
    assert layer.attn_dim == dim and layer.fuse.fc.out_channels == dim


def test_every_sk_family_takes_every_sk_field():
    assert "attn_divisor" in BlockConfig.sk_fields()
    for name in ("sknet50", "sknet_tiny", "cifar_sknet29", "shufflenetv2_050_sk", "mobilenetv2_100_sk"):
        if name in sknet.list_models():
            assert set(BlockConfig.sk_fields()) <= set(sknet.model_info(name).options), name
    model = sknet.create_model("sknet_tiny", attn_divisor=32, min_dim=1)
    assert {m.attn_dim for m in model.modules() if isinstance(m, SKConv2d)} == {32}
    x = torch.randn(2, 1, 28, 28)
    assert model(x).shape == (2, 10)
    with pytest.raises(ConfigError, match="attn_divisor"):
        sknet.create_model("sknet_tiny", attn_divisor=0)


def test_the_paper_counts_do_not_move_with_timms_divisor():
    """SKNet-50 with timm's rd_divisor 32 (skresnext50_32x4d's sk_kwargs) has the paper's d in every unit."""
    with torch.device("meta"):
        paper, timm_like = sknet.create_model("sknet50"), sknet.create_model("sknet50", attn_divisor=32)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(paper) == count(timm_like)
