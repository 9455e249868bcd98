import pytest
import torch

import sknet
from sknet.cli import main
from sknet.convert.timm import TIMM_COUNTERPARTS, convert_timm_model, timm_key

timm = pytest.importorskip("timm")


def randomise_bn(model):
    """Random BN statistics and affine parameters, so that a wrong BN mapping shows in the logits."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model


@pytest.mark.parametrize("name", ["sknet50", "resnext50", "senet50"])
def test_timm_models_convert_with_equal_logits(name):
    theirs = randomise_bn(timm.create_model(TIMM_COUNTERPARTS[name], num_classes=10)).eval()
    ours = convert_timm_model(theirs, name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnext101", "senet101"])
def test_timm_101_models_convert(name):
    theirs = randomise_bn(timm.create_model(TIMM_COUNTERPARTS[name], num_classes=10)).eval()
    ours = convert_timm_model(theirs, name)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)


def test_key_renames():
    assert timm_key("layer2.0.conv2.attn.fc_select.weight") == "layer2.0.conv2.select.fc.weight"
    assert timm_key("layer1.1.bn3.running_var") == "layer1.1.conv3.bn.running_var"
    assert timm_key("bn1.weight") == "stem.conv.bn.weight"
    assert timm_key("fc.bias") == "fc.bias"


def test_convert_cli_from_a_downloaded_file(tmp_path, capsys):
    theirs = timm.create_model("skresnext50_32x4d", num_classes=7).eval()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, tmp_path / "timm.safetensors")
    out = tmp_path / "ours.safetensors"
    argv = ["convert", "--from", "timm", "skresnext50_32x4d", "--checkpoint", str(tmp_path / "timm.safetensors")]
    assert main([*argv, "--out", str(out)]) == 0
    assert "sknet50" in capsys.readouterr().out
    ours = sknet.create_model("sknet50", weights=out).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)


def test_pretrained_offline_fails_with_a_clear_message(monkeypatch):
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # fail at once instead of network timeouts
    monkeypatch.setenv("HF_HOME", "/nonexistent-sknet-test-cache")
    with pytest.raises(sknet.CheckpointError, match="could not fetch timm's pretrained skresnext50_32x4d"):
        sknet.create_model("sknet50", pretrained="timm")
    with pytest.raises(sknet.CheckpointError, match="could not fetch timm's pretrained skresnext50_32x4d"):
        sknet.create_model("sknet50", pretrained=True)  # True: the first source with weights for it, timm's
    with pytest.raises(sknet.ConfigError, match="'timm' has no weights for 'sknet26' \\(it has: resnext101"):
        sknet.create_model("sknet26", pretrained="timm")
    with pytest.raises(sknet.ConfigError, match="no pretrained weights are known for 'sknet26'"):
        sknet.create_model("sknet26", pretrained=True)
    with pytest.raises(sknet.ConfigError, match=r"pretrained='imagenet': use True, or a source of weights \('timm'\)"):
        sknet.create_model("sknet50", pretrained="imagenet")


def test_convert_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["convert", "--from", "timm", "vit_base", "--out", str(tmp_path / "a.safetensors")]) == 2
    assert "no sknet model matches timm's 'vit_base'" in capsys.readouterr().err
    assert main(["convert", "--from", "timm", "resnext50_32x4d", "--out", str(tmp_path / "a.pt")]) == 2
    assert "--out must end in .safetensors" in capsys.readouterr().err


def test_a_state_of_another_timm_model_is_a_clear_error():
    from sknet.convert.timm import convert_timm_state

    with torch.device("meta"):
        state = timm.create_model("resnext50_32x4d").state_dict()
    with pytest.raises(
        sknet.CheckpointError, match="timm's skresnext50_32x4d weights: its tensors do not fit this model"
    ):
        convert_timm_state(state, "sknet50")


def test_convert_cli_reads_wrapped_and_prefixed_checkpoints_and_records_timms_preprocessing(tmp_path, capsys):
    """A timm training checkpoint ({'state_dict': ...} with DDP's module. prefix) converts, and the weights
    record timm's own pretrained_cfg for the model (bicubic for skresnext50_32x4d), found offline."""
    theirs = randomise_bn(timm.create_model("skresnext50_32x4d", num_classes=7)).eval()
    state = {f"module.{k}": v for k, v in theirs.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 9}, tmp_path / "timm.pth.tar")
    out = tmp_path / "ours.safetensors"
    argv = ["convert", "--from", "timm", "skresnext50_32x4d", "--checkpoint", str(tmp_path / "timm.pth.tar")]
    assert main([*argv, "--out", str(out)]) == 0
    ours = sknet.create_model(weights=out).eval()
    cfg = timm.models.get_pretrained_cfg("skresnext50_32x4d")
    record = sknet.data_config(ours)
    assert (record.interpolation, record.crop_fraction) == (cfg.interpolation, cfg.crop_pct) == ("bicubic", 0.875)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)


def test_pretrained_timm_fine_tunes_from_the_hub_cache(tmp_path, monkeypatch):
    """pretrained='timm' with num_classes and in_chans, timm reading its weights from the Hub's cache
    (built here, offline): the backbone kept, the classifier new, the first conv summed for one channel."""
    from safetensors.torch import save

    from tests.hub_cache import add_repo, offline_hub

    theirs = randomise_bn(timm.create_model("skresnext50_32x4d")).eval()
    tensors = save({k: v.contiguous() for k, v in theirs.state_dict().items()})
    add_repo(
        tmp_path / "hub", timm.models.get_pretrained_cfg("skresnext50_32x4d").hf_hub_id, {"model.safetensors": tensors}
    )
    offline_hub(monkeypatch, tmp_path / "hub")
    with pytest.warns(
        UserWarning, match="first conv adapted from 3 to 1 input channels; classifier re-initialised for 5"
    ):
        ours = sknet.create_model("sknet50", pretrained="timm", num_classes=5, in_chans=1).eval()
    torch.testing.assert_close(ours.stem.conv.conv.weight, theirs.conv1.weight.sum(1, keepdim=True))
    assert ours.fc.out_features == 5 and ours.pretrained_cfg["interpolation"] == "bicubic"
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x), theirs.forward_features(x.repeat(1, 3, 1, 1)))


def test_timm_create_model_loads_the_weights_sknet_knows_from_the_hub_cache(tmp_path, monkeypatch):
    """timm.create_model("sknet50", pretrained=True): timm's own loader reads skresnext50_32x4d's weights from
    the Hub's cache (built here, offline) and sknet's filter renames them; timm adapts the classifier and the
    first conv as for its own models; a weights file of one's own goes through pretrained_cfg_overlay."""
    from safetensors.torch import save, save_file

    from tests.hub_cache import add_repo, offline_hub

    theirs = randomise_bn(timm.create_model("skresnext50_32x4d")).eval()
    tensors = save({k: v.contiguous() for k, v in theirs.state_dict().items()})
    add_repo(tmp_path / "hub", "timm/skresnext50_32x4d.ra_in1k", {"model.safetensors": tensors})
    offline_hub(monkeypatch, tmp_path / "hub")
    ours = timm.create_model("sknet50", pretrained=True).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)
    assert ours.pretrained_cfg["interpolation"] == "bicubic"
    tuned = timm.create_model("sknet50.ra_in1k", pretrained=True, num_classes=5, in_chans=1, features_only=True)
    torch.testing.assert_close(tuned.stem.conv.conv.weight, theirs.conv1.weight.sum(1, keepdim=True))
    own = sknet.create_model("sknet_tiny", num_classes=10)
    save_file(own.state_dict(), tmp_path / "own.safetensors")
    overlay = {"file": str(tmp_path / "own.safetensors")}
    again = timm.create_model("sknet_tiny", pretrained=True, pretrained_cfg_overlay=overlay)
    assert torch.equal(again.layer3[0].conv2.select.fc.weight, own.layer3[0].conv2.select.fc.weight)
    with pytest.raises(sknet.ConfigError, match="sknet26: no pretrained weights are known to sknet"):
        timm.create_model("sknet26", pretrained=True)
