"""timm's model interface on every family, with timm itself as the referee where it is installed."""

import copy

import numpy as np
import pytest
import torch
from PIL import Image

import sknet
from sknet import ConfigError

# One model per family (the builders differ; the interface is the base class's).
FAMILIES = {
    "sknet_tiny": 28,
    "resnext_tiny": 28,
    "sknet26": 64,
    "senet26": 64,
    "sknet29": 32,
    "shufflenetv2_050_sk": 64,
    "mobilenetv2_100_sk": 64,
}


def image(mode: str, size=(53, 41)) -> Image.Image:
    rng = np.random.default_rng(0)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


@pytest.mark.parametrize("name", ["sknet_tiny", "sknet29", "sknet50"])
def test_timm_resolves_the_models_own_preprocessing(name):
    timm_data = pytest.importorskip("timm.data")
    with torch.device("meta"):
        model = sknet.create_model(name)
    record = sknet.data_config(model)
    cfg = timm_data.resolve_model_data_config(model)
    assert cfg["input_size"] == (record.in_chans, record.input_size, record.input_size)
    assert cfg["interpolation"] == record.interpolation and cfg["crop_pct"] == record.crop_fraction
    assert tuple(cfg["mean"]) == record.mean and tuple(cfg["std"]) == record.std
    img = image("L" if record.in_chans == 1 else "RGB")
    # Same pixels, resized and cropped alike; normalised in another order (timm: v1 on floats, ours: v2 on
    # uint8), so equal to float32 rounding.
    torch.testing.assert_close(timm_data.create_transform(**cfg)(img), sknet.transforms(model)(img), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("crop", "interpolation"), [(0.95, "bicubic"), (0.875, "bilinear"), (1.0, "bicubic")])
def test_timm_and_sknet_transforms_agree_for_any_recorded_crop(crop, interpolation):
    """A record set from timm's pretrained_cfg (e.g. resnext50_32x4d's crop_pct 0.95, bicubic) gives the
    same tensor through timm's create_transform and sknet.transforms (shorter side 224 / 0.95 → 235)."""
    timm_data = pytest.importorskip("timm.data")
    with torch.device("meta"):
        model = sknet.create_model("resnext50")
    mode = "center" if crop < 1 else "squash"
    cfg = {"input_size": (3, 224, 224), "crop_pct": crop, "crop_mode": mode, "interpolation": interpolation}
    model.pretrained_cfg = cfg
    assert sknet.data_config(model).crop_fraction == crop
    cfg = timm_data.resolve_model_data_config(model)
    img = image("RGB", (300, 257))
    # Same pixels, resized and cropped alike; normalised in another order (timm: v1 on floats, ours: v2 on
    # uint8), so equal to float32 rounding.
    torch.testing.assert_close(timm_data.create_transform(**cfg)(img), sknet.transforms(model)(img), rtol=0, atol=1e-6)


def test_a_backbone_carries_the_same_preprocessing():
    timm_data = pytest.importorskip("timm.data")
    backbone = sknet.create_model("sknet_tiny", features_only=True)
    cfg = timm_data.resolve_model_data_config(backbone)
    assert cfg["input_size"] == (1, 28, 28) and cfg["crop_mode"] == "squash"
    assert backbone.pretrained_cfg["classifier"] is None and backbone.pretrained_cfg["architecture"] == "sknet_tiny"


def test_pretrained_cfg_keys_and_default_cfg():
    model = sknet.create_model("sknet_tiny", num_classes=7)
    cfg = model.pretrained_cfg
    assert cfg == model.default_cfg
    assert cfg["architecture"] == "sknet_tiny" and cfg["num_classes"] == 7 and cfg["crop_mode"] == "squash"
    params = dict(model.named_parameters())
    assert f"{cfg['first_conv']}.weight" in params and f"{cfg['classifier']}.weight" in params
    with pytest.raises(ConfigError, match="border"):
        model.pretrained_cfg = {"crop_mode": "border"}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_classifier_head_and_intermediates(name):
    model = sknet.create_model(name).eval()
    size = FAMILIES[name]
    x = torch.randn(2, model.in_chans, size, size)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        assert pooled.shape == (2, model.num_features)
        torch.testing.assert_close(model.get_classifier()(pooled), logits)
        final, stages = model.forward_intermediates(x)
        torch.testing.assert_close(final, features)
        for a, b in zip(stages, model.forward_stages(x), strict=True):
            torch.testing.assert_close(a, b)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [t.shape[1] for t in last_two] == [info["num_chs"] for info in model.feature_info[-2:]]
        first = model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(first[0], stages[0])
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pooled)
    with pytest.raises(ConfigError, match="feature levels"):
        model.forward_intermediates(x, indices=[len(model.feature_info)])
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3


def test_timm_layer_decay_groups_follow_the_stages():
    optim = pytest.importorskip("timm.optim")
    model = sknet.create_model("sknet_tiny")
    optimizer = optim.create_optimizer_v2(model, "sgd", lr=0.1, weight_decay=1e-4, layer_decay=0.7)
    scales = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            scales[p] = group["lr_scale"]
    named = dict(model.named_parameters())
    units = len(model.stage_names)  # one unit per stage in sknet_tiny: stem, 3 units, classifier = 5 layers
    assert scales[named["stem.conv.conv.weight"]] == pytest.approx(0.7 ** (units + 1))
    assert scales[named["layer1.0.conv1.conv.weight"]] == pytest.approx(0.7**units)
    assert scales[named["layer3.0.conv3.conv.weight"]] == pytest.approx(0.7)
    assert scales[named["fc.weight"]] == 1.0
    assert len({p for g in optimizer.param_groups for p in g["params"]}) == len(named)


def test_timm_layer_decay_puts_a_head_conv_with_the_last_stage():
    group_parameters = pytest.importorskip("timm.models").group_parameters
    model = sknet.create_model("mobilenetv2_100")
    for coarse in (True, False):  # timm's (99999,): "with the previous group"
        groups = group_parameters(model, model.group_matcher(coarse=coarse), reverse=True)
        head = groups["head_conv.conv.weight"]
        assert head == groups["layer7.0.project.conv.weight"] > groups["stem.conv.conv.weight"]
        assert groups["fc.weight"] == max(groups.values()) == groups["head_conv.conv.weight"] + 1


@pytest.mark.parametrize("name", ["sknet_tiny", "shufflenetv2_050_sk"])
def test_grad_checkpointing_gives_the_same_outputs_gradients_and_statistics(name):
    size = FAMILIES[name]
    plain = sknet.create_model(name).double().train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing()
    x = torch.randn(4, plain.in_chans, size, size, dtype=torch.float64)
    outs = []
    for model in (plain, checkpointed):
        out = model(x)
        out.square().sum().backward()
        outs.append(out)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    for a, b in zip(plain.parameters(), checkpointed.parameters(), strict=True):
        # float64 rounding: checkpointed SK layers take their plain composition, not the lean CPU path
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    for a, b in zip(plain.buffers(), checkpointed.buffers(), strict=True):  # BN statistics updated once
        torch.testing.assert_close(a, b, rtol=0, atol=0)
