import math

import pytest
import torch

import sknet
from sknet import ConfigError, InputShapeError, SKConv2d
from sknet.layers import Bottleneck
from sknet.paper import EXACT_PARAMS, PAPER
from sknet.profile import count_params, profile_model


@pytest.mark.parametrize("name", sorted(EXACT_PARAMS))
def test_exact_parameter_counts(name):
    with torch.device("meta"):
        model = sknet.create_model(name)
    assert count_params(model) == EXACT_PARAMS[name]


@pytest.mark.parametrize("name", sorted(PAPER))
def test_macs_within_one_percent_of_paper(name):
    row = profile_model(name, 224)
    assert abs(row.macs / PAPER[name].macs - 1) < 0.01, row


def test_sknet101_released_stage3_dim_override():
    with torch.device("meta"):
        model = sknet.create_model("sknet101", attn_dims=(None, 16, None, None))  # conv3 = layer2
    assert count_params(model) == 48_686_760


@pytest.mark.parametrize("resolution", [224, 320, 32])
def test_sknet50_forward_resolutions(resolution):
    model = sknet.create_model("sknet50").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, resolution, resolution))
    assert out.shape == (2, 1000)
    assert torch.isfinite(out).all()


@pytest.mark.slow
def test_sknet50_backward_gives_finite_gradient_to_every_parameter():
    model = sknet.create_model("sknet50", num_classes=10)
    model(torch.randn(2, 3, 224, 224)).logsumexp(1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("name", ["sknet26", "resnext26", "senet26"])
def test_small_family_members_train_step(name):
    model = sknet.create_model(name, num_classes=5)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.tensor([1, 3]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize(
    "overrides",
    [
        {"branches": (3,)},
        {"branches": (3, 5)},
        {"branches": (3, 5, 7)},
        {"aggregation": "sum"},
        {"branches": "3,5,7", "aggregation": "sum"},
    ],
)
def test_variants_build_and_run(overrides):
    model = sknet.create_model("sknet26", num_classes=4, **overrides).eval()
    sk = next(m for m in model.modules() if isinstance(m, SKConv2d))
    assert sk.num_paths == len(sknet.parse_branches(overrides.get("branches", (3, 5))))
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 4)


def test_sk_structure_matches_table1():
    model = sknet.create_model("sknet50")
    units = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(units) == 16
    widths = [u.conv2.out_channels for u in units]
    assert widths == [128] * 3 + [256] * 4 + [512] * 6 + [1024] * 3
    assert [u.conv2.attn_dim for u in units] == [32] * 13 + [64] * 3
    strides = [u.conv2.stride for u in units]
    assert strides == [1, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1]


def test_stem_pool_caffe_and_feature_sizes():
    for stem_pool in ("pytorch", "caffe"):
        model = sknet.create_model("resnext26", stem_pool=stem_pool).eval()
        with torch.no_grad():
            assert model.stem(torch.randn(1, 3, 224, 224)).shape[-2:] == (56, 56)
            assert model.forward_features(torch.randn(1, 3, 224, 224)).shape == (1, 2048, 7, 7)
    assert model.stem.pool.ceil_mode
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 16, 32]  # the stem (timm's act1), then C2–C5


def test_options_in_chans_drop_rate_zero_init_and_init():
    model = sknet.create_model("sknet26", in_chans=1, num_classes=7, drop_rate=0.2, zero_init_last_bn=True)
    assert model.stem.conv.conv.in_channels == 1
    assert isinstance(model.drop, torch.nn.Dropout) and model.drop.p == 0.2
    assert all((u.conv3.bn.weight == 0).all() for u in model.modules() if isinstance(u, Bottleneck))
    fc = sknet.create_model("resnext50").fc
    assert abs(fc.weight.std().item() - 0.01) < 0.001 and (fc.bias == 0).all()
    conv = model.layer2[0].conv2.paths[0].conv.weight
    fan_out = conv.shape[0] * conv.shape[2] * conv.shape[3]
    assert abs(conv.std().item() - math.sqrt(2 / fan_out)) < 0.15 * math.sqrt(2 / fan_out)


def test_bad_inputs_and_options():
    model = sknet.create_model("sknet26").eval()
    with pytest.raises(InputShapeError, match="expects 3 input channels, got 1"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(InputShapeError, match="4-D input"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ConfigError, match="no option 'branches'"):
        sknet.create_model("resnext50", branches=(3, 5))
    with pytest.raises(ConfigError, match="stem_pool must be one of"):
        sknet.create_model("sknet26", stem_pool="tf")
    with pytest.raises(ConfigError, match="num_classes must be ≥ 0"):
        sknet.create_model("sknet26", num_classes=-1)
    with pytest.raises(ConfigError, match="drop_rate"):
        sknet.create_model("sknet26", drop_rate=1.5)
    with pytest.raises(ConfigError, match="branches is empty"):
        sknet.create_model("sknet26", branches=())
    message = r"in_channels \(path 1: 5d1g48\)=128 is not divisible by groups=48"
    with pytest.raises(ConfigError, match=message):
        sknet.create_model("sknet26", branches="3,5d1g48")


def test_determinism_same_seed_same_model_and_output():
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = sknet.create_model("sknet26", num_classes=3).eval()
        with torch.no_grad():
            outs.append(model(torch.ones(2, 3, 32, 32)))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
