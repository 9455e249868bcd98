"""drop_path_rate: stochastic depth per bottleneck (torchvision's StochasticDepth), linear over depth."""

import pytest
import torch
from torchvision.ops import StochasticDepth

import sknet
from sknet.errors import ConfigError
from sknet.layers import BlockConfig, Bottleneck


def test_rates_grow_linearly_over_depth_and_zero_adds_no_module():
    model = sknet.create_model("sknet26", drop_path_rate=0.3, num_classes=10)
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    rates = [b.drop_path.p if b.drop_path is not None else 0.0 for b in blocks]
    assert rates == pytest.approx([0.3 * i / (len(blocks) - 1) for i in range(len(blocks))])
    assert all(isinstance(b.drop_path, StochasticDepth) and b.drop_path.mode == "row" for b in blocks[1:])
    plain = sknet.create_model("sknet26", num_classes=10)
    assert all(b.drop_path is None for b in plain.modules() if isinstance(b, Bottleneck))
    assert model.state_dict().keys() == plain.state_dict().keys()  # weights load either way


def test_identity_in_eval_and_whole_samples_dropped_at_the_rate_in_training():
    torch.manual_seed(0)
    block = Bottleneck(8, 8, 8, config=BlockConfig(groups=4), drop_path=0.3).eval()
    plain = Bottleneck(8, 8, 8, config=BlockConfig(groups=4))
    plain.load_state_dict(block.state_dict())
    plain.eval()
    x = torch.randn(4000, 8, 3, 3)
    torch.testing.assert_close(block(x), plain(x), rtol=0, atol=0)

    block.train()
    for m in block.modules():  # BN in train mode would mix samples; keep its statistics fixed
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        branch = block.conv3(block.conv2(block.conv1(x)))
        out = block(x)
    dropped = torch.isclose(out, torch.relu(x), atol=1e-6).flatten(1).all(1)
    kept = torch.isclose(out, torch.relu(x + branch / 0.7), atol=1e-5).flatten(1).all(1)
    assert bool((dropped ^ kept).all()), "every sample is either dropped whole or kept, scaled by 1/(1 − p)"
    assert dropped.float().mean().item() == pytest.approx(0.3, abs=0.03)  # 4000 samples: ±4.6σ


@pytest.mark.parametrize("rate", [-0.1, 1.0, "x", True])
def test_out_of_range_rate_is_one_clear_error(rate):
    with pytest.raises(ConfigError, match=r"^drop_path_rate must be in \[0, 1\)"):
        sknet.create_model("sknet_tiny", drop_path_rate=rate)
