"""torchvision's detectors on any sknet model: Faster R-CNN, RetinaNet and Mask R-CNN over an FPN backbone.

:func:`sknet_fpn_backbone` mirrors torchvision's ``resnet_fpn_backbone``: the model's stages (``layer1``…)
under torchvision's ``BackboneWithFPN``, the first ones frozen (`trainable_layers`), frozen BatchNorm by
default (detection trains at a few images per GPU: batch statistics of one or two images are noise). The
builders mirror ``fasterrcnn_resnet50_fpn`` and its siblings; their keyword arguments go to torchvision's
model classes (``min_size``, ``max_size``, ``rpn_anchor_generator``, ``box_detections_per_img``, ...), and
the images are normalised with the backbone's own statistics (``model.data_config``, one channel for the
compact grayscale models).

Backbone weights come from any route sknet loads (``weights_backbone``): a file (``sknet train``'s
``model.safetensors``, a converted timm or Caffe file, a state dict), ``local-dir:``/``hf-hub:`` names, or
``True`` for the ImageNet weights sknet knows (``sknet.create_model(name, pretrained=True)``).

:func:`coco_map` and :func:`evaluate_detector` score detections with the standard COCO box metric (pycocotools
through torchmetrics: the optional extra ``pip install 'sknet[detection]'``); benchmarks/detection.py and
docs/detection.md use them on the scenes of :mod:`sknet.data.objects`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from sknet.errors import ConfigError
from sknet.models import create_model
from sknet.models.base import STEM_FEATURE, BottleneckNet
from sknet.models.hub_names import is_hub_name

WeightsLike = str | Path | bool | None


def backbone_model(name: str, weights: WeightsLike = None, **options: object) -> BottleneckNet:
    """sknet's `name` (``options``: its builder options, e.g. ``norm_layer``, ``output_stride``) with the
    backbone weights `weights` names (see the module's docstring); the classifier is not needed and not built
    for other class counts (``num_classes`` of the weights is kept)."""
    if weights is None or weights is False:
        return create_model(name, **options)
    if weights is True or weights == "timm":
        return create_model(name, pretrained=weights, **options)
    if isinstance(weights, str) and is_hub_name(weights):
        model = create_model(weights, **options)
        found = model.weights_meta.get("model")
        if found != name:
            raise ConfigError(f"{weights} holds weights of {found!r}, not of the backbone {name!r}")
        return model
    if not isinstance(weights, (str, Path)):
        raise ConfigError(f"weights_backbone must be a file, a local-dir:/hf-hub: name or True, got {weights!r}")
    return create_model(name, weights=weights, **options)


def _trainable(model: BottleneckNet, trainable_layers: int) -> None:
    """Freeze all but the last `trainable_layers` of (stem, stage 1, …, stage N), as torchvision does."""
    names = ["stem", *model.stage_names]
    if isinstance(trainable_layers, bool) or not isinstance(trainable_layers, int):
        raise ConfigError(f"trainable_layers must be an integer, got {trainable_layers!r}")
    if not 0 <= trainable_layers <= len(names):
        raise ConfigError(f"trainable_layers must be in [0, {len(names)}] for this backbone, got {trainable_layers}")
    for name in names[: len(names) - trainable_layers]:
        getattr(model, name).requires_grad_(False)


def sknet_fpn_backbone(
    backbone_name: str,
    *,
    weights: WeightsLike = None,
    norm_layer: object = "frozen",
    trainable_layers: int = 3,
    returned_layers: Sequence[int] | None = None,
    extra_blocks: ExtraFPNBlock | None = None,
    out_channels: int = 256,
    **options: object,
) -> BackboneWithFPN:
    """An FPN over sknet's `backbone_name`, as torchvision's ``resnet_fpn_backbone``.

    Args:
        weights: backbone weights (see the module's docstring); None: random.
        norm_layer: every norm of the backbone (default "frozen": torchvision's FrozenBatchNorm2d, loading
            BatchNorm weights exactly); "batchnorm", "syncbn", "groupnorm" or a callable.
        trainable_layers: how many of the last stages train (stem included: the ResNeXts have 5); the rest
            is frozen.
        returned_layers: the stages (1-based) whose maps the FPN gets; default all of them.
        extra_blocks: torchvision's extra FPN levels (default ``LastLevelMaxPool``: "pool", as its builders).
        options: the backbone's builder options (``output_stride``, ``branches``, ``drop_path_rate``, ...).
    Returns: torchvision's BackboneWithFPN ((N, C, H, W) → OrderedDict of maps with `out_channels` channels,
        keys "0", "1", … and "pool"); the backbone model is its ``body``'s source, weights shared.
    Raises ConfigError for options the backbone does not take, a `trainable_layers` or `returned_layers` out
    of range; CheckpointError for weights that do not fit.
    """
    model = backbone_model(backbone_name, weights, norm_layer=norm_layer, **options)
    return _fpn(model, trainable_layers, returned_layers, extra_blocks, out_channels)


def _fpn(
    model: BottleneckNet,
    trainable_layers: int,
    returned_layers: Sequence[int] | None,
    extra_blocks: ExtraFPNBlock | None,
    out_channels: int = 256,
) -> BackboneWithFPN:
    backbone_name = model.weights_meta.get("model", type(model).__name__)
    _trainable(model, trainable_layers)
    count = len(model.stage_names)
    returned = list(range(1, count + 1)) if returned_layers is None else [int(i) for i in returned_layers]
    if not returned or any(not 1 <= i <= count for i in returned):
        raise ConfigError(f"returned_layers must be stages 1..{count} of {backbone_name}, got {returned_layers!r}")
    channels = {info["module"]: info["num_chs"] for info in model.feature_info if info["module"] != STEM_FEATURE}
    names = [model.stage_names[i - 1] for i in returned]
    missing = [name for name in names if name not in channels]
    if missing:
        raise ConfigError(f"{backbone_name} lists no feature map for {', '.join(missing)} (see its feature_info)")
    return_layers = {name: str(i) for i, name in enumerate(names)}
    backbone = BackboneWithFPN(
        model,
        return_layers,
        [int(channels[name]) for name in names],
        out_channels,
        extra_blocks=extra_blocks or LastLevelMaxPool(),
    )
    backbone.data_config = model.data_config  # the preprocessing of the backbone's weights
    return backbone


def _defaults(backbone: BackboneWithFPN, kwargs: dict[str, object], masks: bool = False) -> dict[str, object]:
    """torchvision's keyword arguments completed for this backbone: images normalised with its own statistics,
    and, for a backbone with other than 4 stages returned, the anchors (torchvision's sizes 32, 64, … one per
    level) and the RoI pooling over the levels it has."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    record = getattr(backbone, "data_config", None)
    defaults: dict[str, object] = {}
    if record is not None:
        defaults.update(image_mean=list(record.mean), image_std=list(record.std))
    levels = len(backbone.fpn.inner_blocks)  # the stages' maps; the extra block adds "pool"
    if levels != 4:
        sizes = tuple((32 * 2**i,) for i in range(levels + 1))
        defaults["rpn_anchor_generator"] = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        names = [str(i) for i in range(levels)]
        defaults["box_roi_pool"] = MultiScaleRoIAlign(names, 7, 2)
        if masks:
            defaults["mask_roi_pool"] = MultiScaleRoIAlign(names, 14, 2)
    return {**defaults, **kwargs}


def _rcnn_backbone(
    name: str, weights: WeightsLike, trainable_layers: int, norm_layer: object, options, channels: int
) -> BackboneWithFPN:
    """The FPN backbone of the R-CNN builders, from their torchvision-named arguments."""
    return sknet_fpn_backbone(
        name,
        weights=weights,
        norm_layer=norm_layer,
        trainable_layers=trainable_layers,
        out_channels=channels,
        **(options or {}),
    )


def fasterrcnn_sknet_fpn(
    backbone_name: str = "sknet50",
    *,
    num_classes: int = 91,
    weights_backbone: WeightsLike = None,
    trainable_backbone_layers: int = 3,
    norm_layer: object = "frozen",
    backbone_options: dict[str, object] | None = None,
    fpn_channels: int = 256,
    **kwargs: object,
) -> FasterRCNN:
    """torchvision's Faster R-CNN (``fasterrcnn_resnet50_fpn``) on an FPN over sknet's `backbone_name`.
    `num_classes` includes the background (None where ``box_predictor`` is given); `fpn_channels`: the FPN's
    channels (torchvision's 256; fewer for small images and CPUs); `kwargs` go to torchvision's FasterRCNN."""
    backbone = _rcnn_backbone(
        backbone_name, weights_backbone, trainable_backbone_layers, norm_layer, backbone_options, fpn_channels
    )
    return FasterRCNN(backbone, num_classes, **_defaults(backbone, kwargs))


def maskrcnn_sknet_fpn(
    backbone_name: str = "sknet50",
    *,
    num_classes: int = 91,
    weights_backbone: WeightsLike = None,
    trainable_backbone_layers: int = 3,
    norm_layer: object = "frozen",
    backbone_options: dict[str, object] | None = None,
    fpn_channels: int = 256,
    **kwargs: object,
) -> MaskRCNN:
    """torchvision's Mask R-CNN (``maskrcnn_resnet50_fpn``) on an FPN over sknet's `backbone_name`, with
    `fpn_channels` channels (torchvision's 256)."""
    backbone = _rcnn_backbone(
        backbone_name, weights_backbone, trainable_backbone_layers, norm_layer, backbone_options, fpn_channels
    )
    return MaskRCNN(backbone, num_classes, **_defaults(backbone, kwargs, masks=True))


def retinanet_sknet_fpn(
    backbone_name: str = "sknet50",
    *,
    num_classes: int = 91,
    weights_backbone: WeightsLike = None,
    trainable_backbone_layers: int = 3,
    norm_layer: object = "frozen",
    backbone_options: dict[str, object] | None = None,
    **kwargs: object,
) -> RetinaNet:
    """torchvision's RetinaNet (``retinanet_resnet50_fpn``: P3–P7, the last two stages' maps and two extra
    levels) on an FPN over sknet's `backbone_name`."""
    model = backbone_model(backbone_name, weights_backbone, norm_layer=norm_layer, **(backbone_options or {}))
    count = len(model.stage_names)
    last_three = list(range(max(1, count - 2), count + 1))
    backbone = _fpn(model, trainable_backbone_layers, last_three, LastLevelP6P7(256, 256))
    record = getattr(backbone, "data_config", None)
    normalise = {} if record is None else {"image_mean": list(record.mean), "image_std": list(record.std)}
    return RetinaNet(backbone, num_classes, **{**normalise, **kwargs})


# ---------------------------------------------------------------------------------------------------------
# The COCO metric (the optional extra "detection": torchmetrics with pycocotools)


def require_coco_metric() -> None:
    """Raise ConfigError (one line, naming the extra) unless torchmetrics and pycocotools import."""
    try:
        import pycocotools  # noqa: F401
        import torchmetrics.detection  # noqa: F401
    except ImportError as err:
        missing = err.name or "torchmetrics/pycocotools"
        raise ConfigError(
            f"the COCO metric needs torchmetrics and pycocotools ({missing} is missing): pip install 'sknet[detection]'"
        ) from None


def coco_map(predictions: Sequence[dict], targets: Sequence[dict]) -> dict[str, float]:
    """COCO's box metric (pycocotools, through torchmetrics' ``MeanAveragePrecision``) of `predictions` against
    `targets`, one dict per image.

    Args:
        predictions: ``boxes`` (k, 4) float XYXY in pixels, ``scores`` (k,), ``labels`` (k,) int64.
        targets: ``boxes`` (m, 4) and ``labels`` (m,) of the same images.
    Returns: torchmetrics' scalars as floats: ``map`` (AP at IoU .50:.05:.95), ``map_50``, ``map_75``,
        ``map_small``/``medium``/``large``, ``mar_1``/``10``/``100``…; -1.0 where COCO has nothing to average.
    Raises ConfigError when the optional extra is missing; ValueError for lists of other lengths.
    """
    require_coco_metric()
    from torchmetrics.detection import MeanAveragePrecision

    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    metric = MeanAveragePrecision(iou_type="bbox", backend="pycocotools")
    plain = [{key: torch.as_tensor(value).as_subclass(torch.Tensor) for key, value in d.items()} for d in targets]
    metric.update([{k: d[k] for k in ("boxes", "scores", "labels")} for d in predictions], plain)
    return {key: float(value) for key, value in metric.compute().items() if value.numel() == 1}


@torch.no_grad()
def evaluate_detector(model: torch.nn.Module, dataset: Sequence, batch_size: int = 8) -> dict[str, float]:
    """:func:`coco_map` of `model`'s detections on every item (image (C, H, W), target) of `dataset` (e.g.
    :class:`sknet.data.objects.ObjectScenes`), `batch_size` images per call, in eval mode (the model's mode
    is restored). Raises ConfigError when the optional extra is missing (before any image is run)."""
    require_coco_metric()
    was_training = model.training
    model.eval()
    predictions, targets = [], []
    try:
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            outputs = model([image for image, _ in items])
            predictions += [{k: out[k].detach().cpu() for k in ("boxes", "scores", "labels")} for out in outputs]
            targets += [{"boxes": target["boxes"], "labels": target["labels"]} for _, target in items]
    finally:
        model.train(was_training)
    return coco_map(predictions, targets)
