"""timm's model contract, as timm's own tests/test_models.py holds every timm model to it, on one model of every
sknet family, built the way timm's users build it: ``timm.create_model(name, ...)`` after ``import sknet``.

The checks are test_model_forward, test_model_backward, test_model_default_cfgs, test_model_forward_features,
test_model_forward_intermediates and test_model_forward_fx / test_model_backward_fx, at input sizes capped as
timm caps them (a CPU suite). timm is the referee: skipped in one line where it is not installed.
"""

from __future__ import annotations

import math

import pytest
import torch

import sknet

timm = pytest.importorskip("timm")

# One model per family and kind of unit, by its timm name, and the input side it is tried at (timm caps its
# test inputs the same way; smaller here: a 2-core CI runs them all).
FAMILIES = {
    "sknet26": 32,
    "resnext26": 32,
    "senet26": 32,
    "sknet50_k3k5k7": 32,
    "sknet_tiny": 28,
    "resnext_tiny": 28,
    "sknet29": 16,
    "shufflenetv2_050_sk": 32,
    "sknet_mobilenetv2_100": 32,
}


def _input(model, side: int, batch: int) -> torch.Tensor:
    channels = model.default_cfg["input_size"][0]
    return torch.randn(batch, channels, side, side)


def test_every_sknet_model_is_a_timm_model_and_timm_keeps_its_own_names():
    names = set(timm.list_models())
    for name in sknet.list_models():
        assert sknet.timm_model_name(name) in names
    # timm's MobileNetV2 keeps its name; ours carries the prefix.
    assert sknet.timm_model_name("mobilenetv2_100") == "sknet_mobilenetv2_100"
    assert type(timm.create_model("mobilenetv2_100")).__module__.startswith("timm.")
    assert isinstance(timm.create_model("sknet_mobilenetv2_100"), sknet.models.mobilenet.MobileNetV2)


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_and_backward(name):
    """test_model_forward (batch 1, eval) and test_model_backward (batch 2, 42 classes, every parameter gets a
    gradient)."""
    side = FAMILIES[name]
    model = timm.create_model(name, pretrained=False).eval()
    out = model(_input(model, side, 1))
    assert out.shape[0] == 1 and not torch.isnan(out).any()
    model = timm.create_model(name, pretrained=False, num_classes=42).train()
    count = sum(p.numel() for p in model.parameters())
    out = model(_input(model, side, 2))
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert out.shape[-1] == 42 and count == sum(p.grad.numel() for p in model.parameters())


@pytest.mark.parametrize("name", FAMILIES)
def test_default_cfgs(name):
    """test_model_default_cfgs: num_features, head_hidden_size, pool_size, forward_head(pre_logits), the
    classifier removed (pooled features) and the pooling removed (the unpooled map), in place and through
    create_model, and the classifier's and first conv's names in the state dict."""
    model = timm.create_model(name, pretrained=False).eval()
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    cfg = model.default_cfg
    state = model.state_dict()
    # pool_size is the last map's size at the default input; checked at it, the rest at a smaller input.
    with torch.device("meta"):
        assert tuple(model.to("meta").forward_features(torch.empty(1, *cfg["input_size"])).shape[-2:]) == tuple(
            cfg["pool_size"]
        )
    model = timm.create_model(name, pretrained=False).eval()
    x = _input(model, FAMILIES[name], 1)
    side = math.ceil(FAMILIES[name] / model.feature_info[-1]["reduction"])
    features = model.forward_features(x)
    pooled = model.forward_head(features, pre_logits=True)
    assert tuple(features.shape[-2:]) == (side, side) and features.shape[1] == model.num_features
    assert pooled.shape[1] == model.head_hidden_size
    model.reset_classifier(0)
    assert model.num_classes == 0
    out = model(x)
    assert out.shape == pooled.shape
    model.reset_classifier(0, "")
    out = model(x)
    assert out.dim() == 4 and tuple(out.shape[-2:]) == (side, side)
    out = timm.create_model(name, pretrained=False, num_classes=0, global_pool="").eval()(x)
    assert out.dim() == 4 and tuple(out.shape[-2:]) == (side, side)
    assert cfg["classifier"] + ".weight" in state and cfg["first_conv"] + ".weight" in state


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_features(name):
    """test_model_forward_features: features_only gives ≥ 3 levels whose channels and reductions
    feature_info states."""
    side = FAMILIES[name]
    model = timm.create_model(name, pretrained=False, features_only=True).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) >= 3
    outputs = model(_input(model, side, 1))
    assert len(outputs) == len(channels)
    for c, r, o in zip(channels, reductions, outputs, strict=True):
        assert o.shape[1] == c and o.shape[0] == 1 and not torch.isnan(o).any()
        assert o.shape[-1] <= math.ceil(side / r) + 1 and o.shape[-2] <= math.ceil(side / r) + 1


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_intermediates(name):
    """test_model_forward_intermediates and test_model_forward_intermediates_features (feature_cls='getter')."""
    side = FAMILIES[name]
    model = timm.create_model(name, pretrained=False).eval()
    info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    x = _input(model, side, 1)
    output, intermediates = model.forward_intermediates(x, output_fmt="NCHW")
    assert len(intermediates) == len(info.channels()) >= 3
    for c, r, o in zip(info.channels(), info.reduction(), intermediates, strict=True):
        assert o.shape[1] == c and o.shape[-1] <= math.ceil(side / r) + 1
    assert torch.allclose(output, model.forward_features(x))
    model.set_grad_checkpointing()
    output3, _ = model.forward_intermediates(x, output_fmt="NCHW")
    assert torch.allclose(output, output3, rtol=1e-4, atol=1e-5)
    getter = timm.create_model(name, pretrained=False, features_only=True, feature_cls="getter").eval()
    outputs = getter(x)
    assert [o.shape[1] for o in outputs] == getter.feature_info.channels()


def _fx_model(model, train: bool = False):
    """timm's own _create_fx_model: trace with timm's tracer settings and return the last node(s)."""
    from timm.models._features_fx import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names

    tracer_kwargs = {
        "leaf_modules": get_notrace_modules(),
        "autowrap_functions": get_notrace_functions(),
        "param_shapes_constant": True,
    }
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    eval_return, train_return = [eval_nodes[-1]], [train_nodes[-1]]
    if train:
        graph = NodePathTracer(**tracer_kwargs).trace(model)
        nodes = list(reversed(graph.nodes))
        names = [n.name for n in nodes]
        train_return = [train_nodes[-names.index(n.name)] for n in nodes[0]._input_nodes]
    return create_feature_extractor(
        model, train_return_nodes=train_return, eval_return_nodes=eval_return, tracer_kwargs=tracer_kwargs
    )


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_and_backward_fx(name):
    """test_model_forward_fx (the traced graph gives the model's output exactly) and test_model_backward_fx
    (every parameter of the traced training graph gets a gradient)."""
    side = FAMILIES[name]
    model = timm.create_model(name, pretrained=False).eval()
    with torch.inference_mode():
        x = _input(model, side, 1)
        want = model(x)
        got = next(iter(_fx_model(model)(x).values()))
    assert torch.equal(got, want)
    model = timm.create_model(name, pretrained=False, num_classes=42).train()
    count = sum(p.numel() for p in model.parameters())
    traced = _fx_model(model, train=True)
    out = torch.cat(tuple(traced(_input(model, side, 2)).values()))
    out.mean().backward()
    missing = [n for n, p in traced.named_parameters() if p.grad is None]
    assert not missing, missing
    assert out.shape[-1] == 42 and count == sum(p.grad.numel() for p in traced.parameters())
