"""Fine-tuning from any weights: other class counts and input channels, every common checkpoint layout."""

import warnings

import pytest
import torch

import sknet
from sknet import CheckpointError
from sknet.models import finetune
from sknet.models.finetune import adapt_input_conv
from sknet.weights import save_weights


def trained_like(tmp_path, num_classes=4):
    """A sknet_tiny weights file with sknet's metadata, as `sknet train` writes it (4 named classes)."""
    model = sknet.create_model("sknet_tiny", num_classes=num_classes).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # not the fresh initialisation, so that a reload shows
    meta = {
        "model": "sknet_tiny",
        "model_options": {},
        "num_classes": num_classes,
        "in_chans": 1,
        "classes": [f"c{i}" for i in range(num_classes)],
        "mean": [0.29],
        "std": [0.35],
        "input_size": 28,
        "crop_fraction": 1.0,
        "dataset": "synthetic",
    }
    path = tmp_path / "w.safetensors"
    save_weights(path, model, meta)
    return model, path


def test_another_class_count_keeps_the_backbone_and_warns_once(tmp_path):
    source, path = trained_like(tmp_path)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        model = sknet.create_model(weights=path, num_classes=5).eval()
    lines = [str(w.message) for w in said if w.category is UserWarning]
    assert len(lines) == 1 and "classifier re-initialised for 5 classes (the weights have 4)" in lines[0]
    assert said[0].filename != finetune.__file__  # it points at the caller, not at sknet's internals
    own, theirs = model.state_dict(), source.state_dict()
    assert all(torch.equal(own[k], v) for k, v in theirs.items() if not k.startswith("fc."))
    assert model.fc.weight.shape == (5, 256) and torch.equal(model.fc.bias, torch.zeros(5))
    record = sknet.data_config(model)
    assert record.classes is None and record.mean == (0.29,) and model.pretrained_cfg["num_classes"] == 5
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(model.forward_features(x), source.forward_features(x))


@pytest.mark.parametrize("in_chans", [3, 2])
def test_another_channel_count_adapts_the_first_conv(tmp_path, in_chans):
    source, path = trained_like(tmp_path)
    model = sknet.create_model(weights=path, num_classes=5, in_chans=in_chans).eval()
    conv = model.stem.conv.conv.weight
    assert conv.shape[1] == in_chans
    torch.testing.assert_close(conv, source.stem.conv.conv.weight.repeat(1, in_chans, 1, 1) / in_chans)
    x = torch.rand(2, 1, 28, 28)  # a grey image repeated over the channels: the same features
    torch.testing.assert_close(model.forward_features(x.repeat(1, in_chans, 1, 1)), source.forward_features(x))
    assert sknet.data_config(model).mean == (0.29,) * in_chans


def test_adapt_input_conv_is_timms_rule():
    manipulate = pytest.importorskip("timm.models._manipulate")
    weight = torch.randn(64, 3, 7, 7)
    for chans in (1, 2, 3, 4, 8):
        torch.testing.assert_close(adapt_input_conv(chans, weight), manipulate.adapt_input_conv(chans, weight))
    assert adapt_input_conv(1, weight.half()).dtype == torch.half


def test_only_the_class_count_differs_says_so_with_the_numbers(tmp_path):
    source, _ = trained_like(tmp_path)
    torch.save(source.state_dict(), tmp_path / "bare.pt")
    # A bare state dict records nothing: its classifier gives the class count.
    assert sknet.create_model("sknet_tiny", weights=tmp_path / "bare.pt").num_classes == 4
    from sknet.weights import load_state_into

    with pytest.raises(CheckpointError, match=r"classifier for 4 classes, this model for 10: only the class count"):
        load_state_into(sknet.create_model("sknet_tiny"), source.state_dict(), "bare.pt")


LAYOUTS = {
    "bare": lambda s: s,
    "state_dict": lambda s: {"state_dict": s, "epoch": 3},
    "model": lambda s: {"model": s, "optimizer": {}},
    "state_dict_ema": lambda s: {"state_dict": {k: v * 0 for k, v in s.items()}, "state_dict_ema": s},
    "module.": lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}},
    "_orig_mod.": lambda s: {f"_orig_mod.{k}": v for k, v in s.items()},
    "module._orig_mod.": lambda s: {f"module._orig_mod.{k}": v for k, v in s.items()},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_common_checkpoint_layout_loads(tmp_path, layout):
    source, _ = trained_like(tmp_path)
    path = tmp_path / "ckpt.pth"
    torch.save(LAYOUTS[layout](source.state_dict()), path)
    model = sknet.create_model("sknet_tiny", weights=path).eval()
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)
    timm_models = pytest.importorskip("timm.models")  # timm's own loader reads the same file the same way
    theirs = sknet.create_model("sknet_tiny", num_classes=4)
    timm_models.load_checkpoint(theirs, str(path), strict=True)
    theirs.eval()
    torch.testing.assert_close(theirs(x), source(x), rtol=0, atol=0)


def test_a_file_with_no_state_dict_is_one_line(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="neither a state dict nor a checkpoint with one under"):
        sknet.create_model("sknet_tiny", weights=tmp_path / "x.pth")


def test_a_state_dict_without_batchnorms_counters_loads(tmp_path, capsys):
    """Was refused as "missing tensors": timm's and torchvision's checkpoints often leave num_batches_tracked
    out, and torch's own loader fills it for old files; no sknet model uses it (momentum=None would)."""
    from sknet.cli import main

    source, _ = trained_like(tmp_path)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(state) < len(source.state_dict())
    torch.save(state, tmp_path / "no_counters.pth")
    model = sknet.create_model("sknet_tiny", num_classes=4, weights=tmp_path / "no_counters.pth").eval()
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)
    argv = ["eval", "--weights", str(tmp_path / "no_counters.pth"), "--model", "sknet_tiny", "--dataset", "synthetic"]
    assert main([*argv, "--progress", "never", "--device", "cpu"]) == 0
    del state[next(k for k in state if k.endswith("running_var"))]  # anything else missing is still refused
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="1 missing tensors"):
        sknet.create_model("sknet_tiny", num_classes=4, weights=tmp_path / "broken.pth")
