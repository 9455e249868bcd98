from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import sknet

ROOT = Path(__file__).resolve().parents[2]


def test_torch_hub_loads_from_a_local_clone():
    model = torch.hub.load(str(ROOT), "sknet_tiny", source="local", num_classes=3, trust_repo=True)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    entries = (ROOT / "hubconf.py").read_text()
    assert "for _name in _list_models()" in entries  # every registered model is an entry point
    assert torch.hub.load(str(ROOT), "sknet50", source="local", trust_repo=True, num_classes=2).fc.out_features == 2


@pytest.mark.parametrize(
    ("name", "channels", "reductions"),
    [
        ("sknet50", [64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32]),  # the stem (as timm's ResNets), C2–C5
        ("shufflenetv2_050_sk", [24, 48, 96, 192], [2, 8, 16, 32]),
    ],
)
def test_backbone_gives_stage_outputs(name, channels, reductions):
    with torch.device("meta"):
        backbone = sknet.create_model(name, features_only=True)
    assert backbone.channels == channels and backbone.reductions == reductions
    backbone = sknet.create_model(name, features_only=True).eval()
    x = torch.randn(1, 3, 128, 128)
    feats = backbone(x)
    assert [f.shape[1] for f in feats] == channels
    assert [128 // f.shape[-1] for f in feats] == reductions
    assert backbone.feature_info.channels() == channels and backbone.feature_info.reduction() == reductions
    model = sknet.create_model(name).eval()
    model.load_state_dict(backbone.state_dict(), strict=False)
    with torch.no_grad():
        for a, b in zip(model.forward_stages(x), backbone(x), strict=True):
            torch.testing.assert_close(a, b)


def test_backbone_feeds_torchvision_fpn_and_loads_classifier_weights(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    model = sknet.create_model("sknet26")
    backbone = sknet.create_model("sknet26", features_only=True, out_indices=(2, 3, 4))
    missing = backbone.load_state_dict(model.state_dict(), strict=False)
    assert not missing.missing_keys and set(missing.unexpected_keys) == {"fc.weight", "fc.bias"}
    assert backbone.names == ["C3", "C4", "C5"]
    fpn = torchvision.ops.FeaturePyramidNetwork(backbone.channels, 64)
    out = fpn(OrderedDict(zip(backbone.names, backbone(torch.randn(2, 3, 96, 96)), strict=True)))
    assert [v.shape for v in out.values()] == [(2, 64, 12, 12), (2, 64, 6, 6), (2, 64, 3, 3)]
    with pytest.raises(sknet.ConfigError, match="out_indices"):
        sknet.create_model("sknet26", features_only=True, out_indices=(7,))
    with pytest.raises(sknet.ConfigError, match="features_only"):
        sknet.create_model("sknet26", out_indices=(1,))
