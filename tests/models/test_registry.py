import pytest
import torch

import sknet
from sknet import UnknownModelError


def test_list_models_has_the_imagenet_family():
    names = sknet.list_models()
    for depth in (26, 50, 101):
        for family in ("sknet", "resnext", "senet"):
            assert f"{family}{depth}" in names
    assert sknet.list_models("sknet*") == [n for n in names if n.startswith("sknet")]
    assert set(sknet.list_models(family="imagenet")) >= {"sknet50", "resnext50"}


def test_unknown_model_lists_close_matches():
    with pytest.raises(UnknownModelError) as info:
        sknet.create_model("sknet05")
    assert "unknown model 'sknet05'" in str(info.value)
    assert "sknet50" in str(info.value)
    with pytest.raises(UnknownModelError, match=r"see sknet\.list_models"):
        sknet.create_model("zzzzzzzz")


def test_model_info():
    info = sknet.model_info("sknet50")
    assert info.input_size == (3, 224, 224)
    assert "branches" in info.options
    assert "27.5M" in info.description


def test_reset_classifier_for_fine_tuning(tmp_path):
    from sknet.train.trainer import Trainer
    from tests.train.helpers import tiny_config

    Trainer(tiny_config(tmp_path / "run", epochs=1)).fit()
    model = sknet.create_model(weights=tmp_path / "run" / "model.safetensors")
    body = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    model.reset_classifier(7)
    model.eval()  # (a training-mode forward would update BN statistics)
    assert model.num_classes == 7 and model(torch.randn(2, 1, 16, 16)).shape == (2, 7)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in body.items())  # the rest is kept
    assert sknet.data_config(model).classes is None and sknet.data_config(model).input_size == 16


def test_readme_list_models_lines_are_real():
    """The README's sknet.list_models(...) lines show their real output."""
    from pathlib import Path

    root = Path(__file__).parents[2]
    readme = "\n".join((root / page).read_text() for page in ("README.md", "docs/models.md", "docs/api.md"))
    lines = [line for line in readme.splitlines() if "sknet.list_models(" in line and "#" in line]
    lines = [line for line in lines if line.split("#")[0].strip()]
    checked = 0
    for line in lines:
        call, shown = (part.strip() for part in line.split("#", 1))
        if call.startswith("print(") and call.endswith(")"):
            call = call[len("print(") : -1]
        if call.startswith(("sknet.list_models(", "len(sknet.list_models(")) and shown[:1] in "[0123456789":
            assert repr(eval(call, {"sknet": sknet})) == shown.split(":")[0], line
            checked += 1
    assert checked >= 2


def test_the_readme_counts_the_models_it_lists():
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    total, ablations = map(
        int, re.search(r"# (\d+): with CIFAR's sknet29, sknet_tiny and (\d+) ablations", readme).groups()
    )
    assert total == len(sknet.list_models("sknet*"))
    assert ablations == len(sknet.list_models(family="ablation"))
