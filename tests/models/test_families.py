"""CIFAR, lightweight and ablation families: counts against the paper, forward/backward, training."""

import pytest
import torch

import sknet
from sknet.analysis import sk_units
from sknet.cli import main
from sknet.models.registry import model_info
from sknet.paper import CIFAR, LIGHTWEIGHT
from sknet.profile import count_params, profile_model


def meta_params(name: str, **overrides) -> int:
    with torch.device("meta"):
        return count_params(sknet.create_model(name, **overrides))


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [("resnext29_8x64d", 0.005), ("resnext29_16x64d", 0.005), ("senet29", 0.01), ("resnext29_16x32d", 0.005)],
)
def test_cifar_counts_match_the_paper(name, tolerance):
    assert abs(meta_params(name) / CIFAR[name].params - 1) < tolerance


def test_sknet29_is_resnext29_16x32d_with_g32_sk_and_its_count_is_documented():
    assert meta_params("sknet29") == 28_256_394  # +2.0% of the paper's 27.7M; see docs/models.md
    assert meta_params("sknet29", groups=16) == 37_546_122  # the naive SK on 16×32d
    with torch.device("meta"):
        model = sknet.create_model("sknet29")
    convs = list(sk_units(model).values())
    assert len(convs) == 9 and {c.paths[0].conv.groups for c in convs} == {32}
    assert [c.out_channels for c in convs[::3]] == [512, 1024, 2048]


def test_shufflenetv2_matches_torchvision_and_the_paper_mflops():
    torchvision = pytest.importorskip("torchvision")
    for ours, theirs in (("shufflenetv2_050", "shufflenet_v2_x0_5"), ("shufflenetv2_100", "shufflenet_v2_x1_0")):
        assert meta_params(ours) == count_params(getattr(torchvision.models, theirs)())
    assert meta_params("mobilenetv2_100") == count_params(torchvision.models.mobilenet_v2())
    for name in ("shufflenetv2_100_sk", "shufflenetv2_100_se"):
        row = profile_model(name)
        assert abs(row.macs / LIGHTWEIGHT[name].macs - 1) < 0.03, row


def test_every_depthwise_conv_of_shufflenet_sk_is_an_sk_conv():
    model = sknet.create_model("shufflenetv2_050_sk")
    units = sk_units(model)
    # stage 2-4 have 4, 8, 4 units; each down-sampling unit has two depthwise convs (both branches)
    assert len(units) == 16 + 3 and "SK_2_1_2" in units and "SK_4_4" in units
    assert all(c.paths[0].conv.groups == c.in_channels for c in units.values())
    assert not any(
        isinstance(m, torch.nn.Conv2d)
        and m.groups > 1
        and m.groups == m.in_channels
        and not any(m is p.conv for c in units.values() for p in c.paths)
        for m in model.modules()
    )


FAMILY_MODELS = sknet.list_models(family="cifar") + sknet.list_models(family="lightweight")


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_forward_backward_at_native_resolution(name):
    info = model_info(name)
    model = sknet.create_model(name, num_classes=7)
    x = torch.randn(2, *info.input_size)
    out = model(x)
    assert out.shape == (2, 7)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters() if p.requires_grad)
    model.eval()
    assert model(x[:1]).shape == (1, 7)


@pytest.mark.slow
@pytest.mark.parametrize("name", sknet.list_models(family="ablation"))
def test_ablation_presets_forward_backward(name):
    model = sknet.create_model(name, num_classes=5)
    out = model(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, 5)
    out.sum().backward()
    assert model.fc.weight.grad.isfinite().all()


def test_ablation_presets_are_the_named_configurations():
    with torch.device("meta"):
        m = sknet.create_model("sknet50_k3k5k7")
        s = sknet.create_model("sknet50_k3k5_sum")
        t = sknet.create_model("sknet50_k5g64")
        one = sknet.create_model("sknet50_k3")
    assert [str(b) for b in m.layer1[0].conv2.branches] == ["3d1", "3d2", "3d3"]
    assert s.layer1[0].conv2.select is None and s.layer1[0].conv2.num_paths == 2
    assert [str(b) for b in t.layer1[0].conv2.branches] == ["3d1", "5d1g64"]
    assert count_params(one) == 25_028_904  # K3 alone is ResNeXt-50 (Table 7, first row)
    assert meta_params("sknet50_k3k5_sum") == meta_params("sknet50", aggregation="sum")


@pytest.mark.parametrize("name", ["shufflenetv2_050_sk", "mobilenetv2_100_sk", "sknet29"])
def test_branches_and_aggregation_are_options_of_every_sk_family(name):
    with torch.device("meta"):
        three = sknet.create_model(name, branches="3,5,7")
        summed = sknet.create_model(name, aggregation="sum")
    assert all(c.num_paths == 3 for c in sk_units(three).values())
    with pytest.raises(sknet.ConfigError, match="no SK unit"):
        sk_units(summed)


@pytest.mark.parametrize("model", ["sknet29", "shufflenetv2_050_sk"])
def test_train_a_few_steps_through_the_cli(model, tmp_path, capsys):
    argv = [
        "train",
        "--model",
        model,
        "--dataset",
        "synthetic",
        "--batch-size",
        "8",
        "--max-steps",
        "3",
        "--epochs",
        "1",
        "--progress",
        "never",
        "--output",
        str(tmp_path),
    ]
    assert main(argv) == 0
    assert "stopped at max_steps=3" in capsys.readouterr().out
    assert (tmp_path / "checkpoint.pt").exists()


def test_profile_tables(capsys):
    for table in ("cifar", "lightweight", "ablation"):
        assert main(["profile", "--table", table]) == 0
    out = capsys.readouterr().out
    assert "sknet29" in out and "28,256,394" in out and "145.66M" in out and "sknet50_k3k5k7" in out
    assert main(["profile", "--table", "cifar", "sknet50"]) == 2


def test_compact_twins_senet_tiny_and_widths():
    """senet_tiny is resnext_tiny with SE on each unit's output; `widths` changes only the middles."""
    plain, se = sknet.create_model("resnext_tiny"), sknet.create_model("senet_tiny")
    extra = sum(p.numel() for n, p in se.named_parameters() if ".se." in n)
    assert meta_params("senet_tiny") == meta_params("resnext_tiny") + extra == 147_694
    assert len([m for m in se.modules() if type(m).__name__ == "SqueezeExcite"]) == 3
    assert se(torch.randn(2, 1, 28, 28)).shape == plain(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert meta_params("resnext_tiny", widths=(32, 64, 128)) == meta_params("resnext_tiny") == 136_466
    wide = sknet.create_model("resnext_tiny", widths=[32, 64, 176])  # a list, as read back from a config file
    assert [b.conv2.conv.out_channels for b in (wide.layer1[0], wide.layer2[0], wide.layer3[0])] == [32, 64, 176]
    assert meta_params("sknet_tiny", widths=(32, 64, 128)) == meta_params("sknet_tiny") == 171_954
    for bad in ((32, 64), "32,64,176", (32, 0, 128)):
        with pytest.raises(sknet.ConfigError, match="widths"):
            sknet.create_model("resnext_tiny", widths=bad)


@pytest.mark.parametrize("name", ["sknet_tiny", "sknet26", "mobilenetv2_100_sk", "shufflenetv2_050_sk"])
def test_integer_or_other_precision_input_is_one_line_naming_the_dtype(name):
    """uint8 pixels and float64 arrays gave torch's own RuntimeError from inside a convolution."""
    from sknet.errors import InputShapeError

    model = sknet.create_model(name).eval()
    chans = sknet.data_config(model).in_chans
    with pytest.raises(InputShapeError, match=r"expects floating-point images.*got torch.uint8"):
        model(torch.zeros(2, chans, 32, 32, dtype=torch.uint8))
    with pytest.raises(InputShapeError, match=r"float32 weights but got torch.float64 input: x.to\(torch.float32\)"):
        model(torch.zeros(2, chans, 32, 32, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts float32 inputs itself
        assert model(torch.zeros(2, chans, 32, 32)).dtype == torch.bfloat16
    assert model.double()(torch.zeros(2, chans, 32, 32, dtype=torch.float64)).dtype == torch.float64
