import pytest
import torch
from torch import nn

from sknet import ConfigError, InputShapeError, SKConv2d, create_model
from sknet.analysis import (
    channel_profile,
    last_unit_per_stage,
    mean_attention_difference,
    parse_unit_name,
    record_attention,
    sk_units,
)


def set_constant_attention(conv: SKConv2d, probs: torch.Tensor) -> None:
    """Make `conv` attend with `probs` (M, C) whatever its input: W = 0 and BN bias 1 give z = 1, and the
    select weights put log(probs) in one column, so softmax(A z) = probs."""
    with torch.no_grad():
        conv.fuse.fc.weight.zero_()
        conv.fuse.bn.reset_running_stats()
        conv.fuse.bn.weight.fill_(1.0)
        conv.fuse.bn.bias.fill_(1.0)
        conv.select.fc.weight.zero_()
        conv.select.fc.weight[:, 0, 0, 0] = probs.log().flatten()


def known_model():
    """sknet_tiny whose unit k attends to the large kernel with 0.5 + 0.1·k on every channel, except the
    first 16 channels of SK_3_1, which attend with 0.9."""
    model = create_model("sknet_tiny").eval()
    expected = {}
    for k, (name, conv) in enumerate(sk_units(model).items(), start=1):
        large = torch.full((conv.out_channels,), 0.5 + 0.1 * k, dtype=torch.float64)
        if name == "SK_3_1":
            large[:16] = 0.9
        probs = torch.stack([1 - large, large])
        set_constant_attention(conv, probs.float())
        expected[name] = probs
    return model, expected


def test_sknet50_unit_names_follow_the_paper():
    with torch.device("meta"):
        model = create_model("sknet50")
    names = list(sk_units(model))
    assert names == [f"SK_{s}_{u}" for s, n in zip((2, 3, 4, 5), (3, 4, 6, 3), strict=True) for u in range(1, n + 1)]
    assert last_unit_per_stage(names) == ["SK_2_3", "SK_3_4", "SK_4_6", "SK_5_3"]
    assert sk_units(model)["SK_3_4"] is model.layer2[3].conv2
    assert parse_unit_name("SK_2_1_2") == (2, 1, 2)


def test_recorded_attention_and_difference_are_the_constructed_values():
    model, expected = known_model()
    x = torch.randn(3, 1, 28, 28)
    with record_attention(model) as rec:
        model(x)
        model(x[:2])
    assert list(rec.records) == ["SK_2_1", "SK_3_1", "SK_4_1"]
    for name, probs in expected.items():
        a = rec.attention(name)
        assert a.shape == (5, 2, probs.shape[1])
        torch.testing.assert_close(a.double(), probs.expand(5, -1, -1), rtol=0, atol=1e-6)
    # 2·0.6 − 1, 2·0.8 − 1; SK_3_1 (64 channels): 16 channels at 2·0.9 − 1, 48 at 2·0.7 − 1
    diffs = {name: mean_attention_difference(rec.attention(name)) for name in expected}
    torch.testing.assert_close(diffs["SK_2_1"], torch.full((5,), 0.2), rtol=0, atol=1e-6)
    torch.testing.assert_close(diffs["SK_4_1"], torch.full((5,), 0.6), rtol=0, atol=1e-6)
    torch.testing.assert_close(diffs["SK_3_1"], torch.full((5,), (16 * 0.8 + 48 * 0.4) / 64), rtol=0, atol=1e-6)
    profile = channel_profile(rec.attention("SK_3_1"))
    assert profile.shape == (5, 4)
    torch.testing.assert_close(profile[0], torch.tensor([0.9, 0.7, 0.7, 0.7]), rtol=0, atol=1e-6)


def test_nothing_is_recorded_or_hooked_outside_the_block():
    model, _ = known_model()
    x = torch.randn(2, 1, 28, 28)
    rec = record_attention(model, units=["SK_3_1"])
    model(x)
    assert rec.attention("SK_3_1").shape[0] == 0
    with rec:
        assert all(len(c.select._forward_hooks) == (n == "SK_3_1") for n, c in sk_units(model).items())
        model(x)
    model(x)
    assert rec.attention("SK_3_1").shape[0] == 2
    assert all(not c.select._forward_hooks for c in sk_units(model).values())
    assert set(rec.pop()) == {"SK_3_1"} and rec.attention("SK_3_1").shape[0] == 0


def test_recording_works_in_training_mode_and_rows_sum_to_one():
    model = create_model("sknet_tiny").train()
    with record_attention(model) as rec:
        model(torch.randn(4, 1, 28, 28)).sum().backward()
    for a in rec.pop().values():
        torch.testing.assert_close(a.sum(1), torch.ones(4, a.shape[2]))
        assert not a.requires_grad


def test_any_model_holding_sk_convs_gets_names():
    conv = SKConv2d(32, 32, groups=4)
    assert list(sk_units(conv)) == ["SK_1_1"]
    net = nn.Sequential(nn.Conv2d(3, 32, 3), nn.Sequential(SKConv2d(32, 32, groups=4), SKConv2d(32, 32, groups=4)))
    assert list(sk_units(net)) == ["SK_1_1", "SK_1_2"]


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match="no SK unit"):
        sk_units(create_model("resnext_tiny"))
    with pytest.raises(ConfigError, match="no SK unit"):
        sk_units(create_model("sknet_tiny", aggregation="sum"))
    with pytest.raises(ConfigError, match=r"unknown SK unit.*SK_9_9.*SK_2_1"):
        record_attention(create_model("sknet_tiny"), units=["SK_9_9"])
    with pytest.raises(ConfigError, match="not a unit name"):
        parse_unit_name("layer2.3")
    with pytest.raises(ConfigError, match=r"\(N, M, C\)"):
        mean_attention_difference(torch.ones(4, 8))
    with pytest.raises(InputShapeError):
        sknet_input = torch.ones(2, 3, 28, 28)
        create_model("sknet_tiny")(sknet_input)
