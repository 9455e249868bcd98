"""torchvision's semantic segmentation heads on any sknet model: DeepLabV3 and FCN.

As torchvision's ``deeplabv3_resnet50`` / ``fcn_resnet50``: the backbone's last stages dilate instead of
striding (``output_stride`` 8 by default, 16 for a lighter model), the head reads the last stage's map ("out")
and, with `aux_loss`, an FCN head the stage before ("aux"); the logits are upsampled to the input's size.
Backbone weights come from any route sknet loads (see :mod:`sknet.detection`). Images are normalised by the
caller, with the backbone's statistics (``model.backbone.data_config``, sknet.transforms).
"""

from __future__ import annotations

from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import DeepLabV3
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCN, FCNHead

from sknet.detection import WeightsLike, backbone_model
from sknet.errors import ConfigError
from sknet.models import model_info
from sknet.models.base import STEM_FEATURE


def _backbone(
    name: str, weights: WeightsLike, norm_layer: object, output_stride: int, aux: bool, options: dict[str, object]
) -> tuple[IntermediateLayerGetter, int, int | None]:
    """(the backbone giving {"out": last stage, "aux": the one before}, their channels)."""
    if "output_stride" in model_info(name).options:
        options = {**options, "output_stride": output_stride}
    elif output_stride != 32:
        raise ConfigError(f"{name} does not dilate its stages (no output_stride option): use output_stride=32")
    model = backbone_model(name, weights, norm_layer=norm_layer, **options)
    stages = [info for info in model.feature_info if info["module"] != STEM_FEATURE]
    if aux and len(stages) < 2:
        raise ConfigError(f"{name} lists one stage's map: aux_loss needs two")
    layers = {stages[-1]["module"]: "out", **({stages[-2]["module"]: "aux"} if aux else {})}
    getter = IntermediateLayerGetter(model, layers)
    getter.data_config = model.data_config  # the preprocessing of the backbone's weights
    return getter, int(stages[-1]["num_chs"]), int(stages[-2]["num_chs"]) if aux else None


def deeplabv3_sknet(
    backbone_name: str = "sknet50",
    *,
    num_classes: int = 21,
    aux_loss: bool = False,
    weights_backbone: WeightsLike = None,
    norm_layer: object = "batchnorm",
    output_stride: int = 8,
    backbone_options: dict[str, object] | None = None,
) -> DeepLabV3:
    """torchvision's DeepLabV3 (ASPP head) on sknet's `backbone_name`: (N, C, H, W) → {"out": (N, num_classes,
    H, W)} (and "aux" with `aux_loss`). ConfigError for an output stride other than 8/16/32 or options the
    backbone does not take."""
    backbone, channels, aux_channels = _backbone(
        backbone_name, weights_backbone, norm_layer, output_stride, aux_loss, backbone_options or {}
    )
    aux = FCNHead(aux_channels, num_classes) if aux_loss else None
    return DeepLabV3(backbone, DeepLabHead(channels, num_classes), aux)


def fcn_sknet(
    backbone_name: str = "sknet50",
    *,
    num_classes: int = 21,
    aux_loss: bool = False,
    weights_backbone: WeightsLike = None,
    norm_layer: object = "batchnorm",
    output_stride: int = 8,
    backbone_options: dict[str, object] | None = None,
) -> FCN:
    """torchvision's FCN on sknet's `backbone_name` (see :func:`deeplabv3_sknet`)."""
    backbone, channels, aux_channels = _backbone(
        backbone_name, weights_backbone, norm_layer, output_stride, aux_loss, backbone_options or {}
    )
    aux = FCNHead(aux_channels, num_classes) if aux_loss else None
    return FCN(backbone, FCNHead(channels, num_classes), aux)
