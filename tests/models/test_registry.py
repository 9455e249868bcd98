import pytest

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
