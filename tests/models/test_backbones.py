"""Backbones for detection and segmentation: norms as an option on every family, frozen stages, output stride,
torchvision's detection and segmentation heads, and the bad input of each, one line before any work."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

import sknet
from sknet import ConfigError, InputShapeError
from sknet.layers import SKConv2d
from sknet.models.base import BottleneckNet

# One model per family (the lightweight ones have no output stride: they are not ResNeXt-type).
FAMILIES = {"sknet26": 32, "resnext26": 32, "sknet_tiny": 28, "sknet29": 16, "shufflenetv2_050_sk": 32,
            "mobilenetv2_100_sk": 32}  # fmt: skip
RESNEXT_TYPE = ("sknet26", "resnext26", "senet26", "sknet_tiny", "sknet29")


def _x(name: str, batch: int = 2) -> torch.Tensor:
    info = sknet.model_info(name)
    return torch.randn(batch, info.input_size[0], FAMILIES.get(name, 32), FAMILIES.get(name, 32))


def _norms(model: nn.Module) -> list[nn.Module]:
    kinds = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, FrozenBatchNorm2d)
    return [m for m in model.modules() if isinstance(m, kinds)]


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize(
    ("norm", "kind"),
    [("frozen", FrozenBatchNorm2d), (FrozenBatchNorm2d, FrozenBatchNorm2d), ("groupnorm", nn.GroupNorm),
     ("syncbn", nn.SyncBatchNorm), (nn.BatchNorm2d, nn.BatchNorm2d)],
)  # fmt: skip
def test_norm_layer_reaches_every_norm_and_a_batch_of_one_trains_without_batch_statistics(name, norm, kind):
    model = sknet.create_model(name, norm_layer=norm, num_classes=5)
    norms = _norms(model)
    assert norms and all(isinstance(m, kind) for m in norms), {type(m).__name__ for m in norms}
    if kind is nn.GroupNorm:  # the SK fuse step normalises a 1×1 descriptor over all its channels
        fuses = [m.fuse.bn for m in model.modules() if isinstance(m, SKConv2d) and m.fuse is not None]
        assert all(f.num_groups == 1 for f in fuses)
    if kind in (FrozenBatchNorm2d, nn.GroupNorm):  # nothing normalises over the batch: one image trains
        model.train()(_x(name, 1)).sum().backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_batch_of_one_with_batch_statistics_is_one_line_before_any_work():
    model = sknet.create_model("sknet26").train()
    calls = []
    model.stem.register_forward_pre_hook(lambda module, args: calls.append(module))
    with pytest.raises(InputShapeError, match=r"batch of at least 2.*norm_layer='frozen' or 'groupnorm'"):
        model(torch.randn(1, 3, 32, 32))
    assert not calls  # refused before the stem ran
    features = sknet.create_model("sknet26", features_only=True).train()
    with pytest.raises(InputShapeError, match="batch of at least 2"):
        features(torch.randn(1, 3, 32, 32))
    model.eval()(torch.randn(1, 3, 32, 32))  # evaluation: running statistics, any batch


@pytest.mark.parametrize("name", ["sknet26", "sknet_tiny", "mobilenetv2_100_sk"])
def test_batchnorm_weights_load_exactly_into_frozen_norms(name, tmp_path):
    torch.manual_seed(0)
    trained = sknet.create_model(name, num_classes=4).eval()
    with torch.no_grad():
        for m in trained.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2), m.weight.uniform_(0.5, 1.5)
    path = tmp_path / "w.pt"
    torch.save(trained.state_dict(), path)
    frozen = sknet.create_model(name, weights=path, norm_layer="frozen").eval()
    theirs = trained.state_dict()
    for key, value in frozen.state_dict().items():
        assert torch.equal(value, theirs[key]), key  # every tensor loaded as it was (batch counts aside)
    x = _x(name)
    torch.testing.assert_close(frozen(x), trained(x), rtol=1e-5, atol=1e-5)  # the same function, to rounding
    # And back: weights of a frozen model into BatchNorm (the batch counts start at 0).
    torch.save(frozen.state_dict(), tmp_path / "f.pt")
    again = sknet.create_model(name, weights=tmp_path / "f.pt").eval()
    torch.testing.assert_close(again(x), trained(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_sync_batchnorm_conversion_works_on_every_model(name):
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(sknet.create_model(name, num_classes=3))
    assert any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
    model.train()(_x(name)).sum().backward()  # one process: SyncBatchNorm computes as BatchNorm does
    out = model.eval()(_x(name))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("frozen_stages", [-1, 0, 2, 4])
def test_frozen_stages_and_norm_eval_as_mmdet(frozen_stages):
    model = sknet.create_model("sknet26", frozen_stages=frozen_stages).train()
    frozen = ["stem", "layer1", "layer2", "layer3", "layer4"][: frozen_stages + 1]
    for name in ["stem", "layer1", "layer2", "layer3", "layer4"]:
        module = getattr(model, name)
        assert all(p.requires_grad != (name in frozen) for p in module.parameters()), name
        assert all(m.training != (name in frozen) for m in module.modules()), name
    model.eval().train()  # train() after eval() keeps them frozen
    assert not model.stem.training if frozen_stages >= 0 else model.stem.training
    assert model.fc.training
    norm_eval = sknet.create_model("sknet26", norm_eval=True).train()
    batchnorms = [m for m in norm_eval.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batchnorms and not any(m.training for m in batchnorms) and norm_eval.layer1[0].conv1.conv.training
    before = [m.running_mean.clone() for m in batchnorms]
    norm_eval(torch.randn(4, 3, 32, 32))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, batchnorms, strict=True))


@pytest.mark.parametrize("name", RESNEXT_TYPE)
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_stride_dilates_the_last_stages(name, output_stride):
    side = 64
    model = sknet.create_model(name, output_stride=output_stride).eval()
    natural = sknet.create_model(name).feature_info[-1]["reduction"]
    channels = sknet.model_info(name).input_size[0]
    maps = model.forward_stages(torch.randn(1, channels, side, side))
    reductions = [info["reduction"] for info in model.feature_info]
    assert reductions[-1] == min(natural, output_stride)
    assert [m.shape[-1] for m in maps] == [-(-side // r) for r in reductions]
    # Same weights as the striding network: only how they are applied changes.
    plain = sknet.create_model(name)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_an_sk_units_paths_multiply_their_dilation_in_a_dilated_stage():
    model = sknet.create_model("sknet26", output_stride=8)
    # Stage 3 dilates by 2, stage 4 by 4; the first unit of a stage keeps the dilation before it.
    first3, later3 = model.layer3[0].conv2, model.layer3[1].conv2
    first4, later4 = model.layer4[0].conv2, model.layer4[1].conv2
    assert [p.conv.dilation[0] for p in first3.paths] == [1, 2] and first3.paths[0].conv.stride == (1, 1)
    assert [p.conv.dilation[0] for p in later3.paths] == [2, 4]
    assert [p.conv.dilation[0] for p in first4.paths] == [2, 4]
    assert [p.conv.dilation[0] for p in later4.paths] == [4, 8]
    assert model.layer3[0].downsample.conv.stride == (1, 1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"norm_layer": "batchnrom"}, "norm_layer 'batchnrom' is not a known norm: use one of batchnorm, frozen"),
        ({"norm_layer": 3}, "norm_layer must be a name"),
        ({"output_stride": 12}, "output_stride must be one of 8, 16, 32, got 12"),
        ({"output_stride": "16"}, "output_stride must be one of 8, 16, 32"),
        ({"frozen_stages": 5}, "frozen_stages must be an integer from -1 to 4"),
        ({"frozen_stages": -2}, "frozen_stages must be an integer from -1 to 4"),
        ({"global_pool": "sum"}, "global_pool='sum': use one of"),
        ({"global_pool": ""}, "global_pool='' \\(no pooling\\) needs num_classes=0"),
        ({"norm_eval": "yes"}, "norm_eval must be True or False"),
    ],
)
def test_bad_backbone_options_are_one_line_before_any_work(options, message, monkeypatch):
    built = []
    monkeypatch.setattr(BottleneckNet, "add_stage", lambda *a, **k: built.append(a))
    with pytest.raises(ConfigError, match=message) as err:
        sknet.create_model("sknet26", **options)
    assert "\n" not in str(err.value) and not built


def test_a_lightweight_family_has_no_output_stride():
    with pytest.raises(ConfigError, match="has no option 'output_stride'"):
        sknet.create_model("shufflenetv2_050_sk", output_stride=16)


def test_num_classes_zero_gives_pooled_features_and_global_pool_the_map():
    model = sknet.create_model("sknet_tiny", num_classes=0).eval()
    x = torch.randn(2, 1, 28, 28)
    assert model(x).shape == (2, model.num_features) and isinstance(model.fc, nn.Identity)
    unpooled = sknet.create_model("sknet_tiny", num_classes=0, global_pool="").eval()
    assert unpooled(x).shape == (2, 256, 4, 4)
    maxed = sknet.create_model("sknet_tiny", global_pool="max").eval()
    torch.testing.assert_close(maxed.forward_head(maxed.forward_features(x), pre_logits=True),
                               maxed.forward_features(x).amax((2, 3)))  # fmt: skip


def test_pretrained_weights_take_options_that_keep_their_shapes(monkeypatch):
    """pretrained=True builds the model with the options given (norm_layer, output_stride, frozen_stages) and
    loads the weights strictly; an option that changes the shapes is named by the load."""
    from sknet.models import registry

    torch.manual_seed(0)
    source = sknet.create_model("sknet26").state_dict()
    fetch = lambda name: (copy.deepcopy(source), {"model": name, "source": "test"})  # noqa: E731
    monkeypatch.setitem(registry._PRETRAINED, "test", (fetch, frozenset({"sknet26"})))
    model = sknet.create_model("sknet26", pretrained="test", norm_layer="frozen", output_stride=16, frozen_stages=1)
    assert torch.equal(model.layer4[0].conv2.paths[1].conv.weight, source["layer4.0.conv2.paths.1.conv.weight"])
    assert isinstance(model.stem.conv.bn, FrozenBatchNorm2d) and model.feature_info[-1]["reduction"] == 16
    with pytest.raises(sknet.CheckpointError, match="do not fit"):
        sknet.create_model("sknet26", pretrained="test", branches="3,5,7")
    with pytest.raises(ConfigError, match="no pretrained weights are known for 'sknet_tiny'"):
        sknet.create_model("sknet_tiny", pretrained=True)


# ---- torchvision's heads -------------------------------------------------------------------------------


def _targets(masks: bool = False) -> list[dict[str, torch.Tensor]]:
    boxes = torch.tensor([[8.0, 10.0, 40.0, 50.0], [50.0, 20.0, 90.0, 60.0]])
    target = {"boxes": boxes, "labels": torch.tensor([1, 2])}
    if masks:
        target["masks"] = torch.zeros(2, 96, 96, dtype=torch.uint8)
        target["masks"][0, 10:50, 8:40] = target["masks"][1, 20:60, 50:90] = 1
    return [target, copy.deepcopy(target)]


@pytest.mark.parametrize("builder", ["fasterrcnn_sknet_fpn", "retinanet_sknet_fpn", "maskrcnn_sknet_fpn"])
@pytest.mark.parametrize("backbone", ["sknet_tiny", "sknet26"])
def test_torchvision_detectors_train_and_predict_on_sknet_backbones(builder, backbone):
    from sknet import detection

    torch.manual_seed(0)
    model = getattr(detection, builder)(backbone, num_classes=3, min_size=96, max_size=96)
    channels = sknet.model_info(backbone).input_size[0]
    images = [torch.rand(channels, 96, 96) for _ in range(2)]
    losses = model.train()(images, _targets(masks=builder.startswith("mask")))
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    body = model.backbone.body
    names = ["stem", *[n for n in ("layer1", "layer2", "layer3", "layer4") if hasattr(body, n)]]
    frozen = [p for n, p in body.named_parameters() if n.startswith(tuple(names[: len(names) - 3]))]
    assert frozen and all(p.grad is None and not p.requires_grad for p in frozen)  # trainable_backbone_layers=3
    detections = model.eval()(images)
    assert len(detections) == 2 and detections[0]["boxes"].shape[-1] == 4
    assert all(isinstance(m, FrozenBatchNorm2d) for m in _norms(model.backbone.body) if not isinstance(m, nn.GroupNorm))


def test_fpn_backbone_mirrors_resnet_fpn_backbone_and_loads_any_weights(tmp_path):
    from sknet.detection import sknet_fpn_backbone

    torch.manual_seed(0)
    trained = sknet.create_model("sknet26", num_classes=7)
    sknet.save_pretrained(trained, tmp_path / "folder")
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    for weights in (tmp_path / "w.pt", f"local-dir:{tmp_path / 'folder'}"):
        fpn = sknet_fpn_backbone("sknet26", weights=weights, trainable_layers=5, returned_layers=[2, 4])
        got = fpn.body.layer2[0].conv2.select.fc.weight
        assert torch.equal(got, trained.layer2[0].conv2.select.fc.weight)
        out = fpn(torch.randn(1, 3, 64, 64))
        assert list(out) == ["0", "1", "pool"] and all(v.shape[1] == 256 for v in out.values())
    with pytest.raises(ConfigError, match=r"trainable_layers must be in \[0, 5\]"):
        sknet_fpn_backbone("sknet26", trainable_layers=6)
    with pytest.raises(ConfigError, match=r"returned_layers must be stages 1\.\.4"):
        sknet_fpn_backbone("sknet26", returned_layers=[0, 5])
    with pytest.raises(ConfigError, match="holds weights of 'sknet26', not of the backbone 'resnext26'"):
        sknet_fpn_backbone("resnext26", weights=f"local-dir:{tmp_path / 'folder'}")


@pytest.mark.parametrize("builder", ["deeplabv3_sknet", "fcn_sknet"])
def test_torchvision_segmentation_heads_on_a_dilated_sknet(builder):
    from sknet import segmentation

    model = getattr(segmentation, builder)("sknet26", num_classes=4, aux_loss=True)
    assert model.backbone.layer4[1].conv2.paths[1].conv.dilation == (8, 8)  # output stride 8: "5×5" d2 × 4
    x = torch.randn(2, 3, 64, 64)
    out = model.train()(x)
    assert out["out"].shape == out["aux"].shape == (2, 4, 64, 64)
    (out["out"].sum() + out["aux"].sum()).backward()
    with pytest.raises(ConfigError, match="no output_stride option"):
        getattr(segmentation, builder)("shufflenetv2_050_sk", num_classes=4)
    light = getattr(segmentation, builder)("shufflenetv2_050_sk", num_classes=4, output_stride=32).eval()
    assert light(x)["out"].shape == (2, 4, 64, 64)


def test_the_sk_layers_of_a_frozen_backbone_run_the_fast_tails_where_they_apply():
    """Frozen norms are fixed affine maps: the contract says so, and the fused tail takes them in training."""
    model = sknet.create_model("sknet26", norm_layer="frozen").train()
    layer = next(m for m in model.modules() if isinstance(m, SKConv2d))
    contract = layer.contract()
    assert contract.path_norm.value == "affine" and contract.closed_form


@pytest.mark.parametrize(("name", "options"), [("sknet_tiny", {}), ("resnext_tiny", {"widths": (32, 64, 176)})])
@pytest.mark.parametrize("norm", ["frozen", "groupnorm", "batchnorm"])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_the_compact_twins_train_faster_rcnn_on_small_images_at_batch_2(name, options, norm, in_chans):
    """The detection job's backbones (benchmarks/detection.py): each norm, 1 or 3 channels, every stage trained."""
    from sknet.detection import fasterrcnn_sknet_fpn

    model = fasterrcnn_sknet_fpn(name, num_classes=3, norm_layer=norm, trainable_backbone_layers=4,
                                 backbone_options={**options, "in_chans": in_chans}, fpn_channels=32, min_size=48,
                                 max_size=48, rpn_post_nms_top_n_train=50, box_batch_size_per_image=16)  # fmt: skip
    assert len(model.transform.image_mean) == in_chans  # the backbone's own statistics, per channel
    images = [torch.rand(in_chans, 48, 48) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])}] * 2
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.backbone.body.stem.conv.conv.weight.grad is not None  # the stem trains too (trainable 4)
    assert len(model.eval()(images)) == 2
