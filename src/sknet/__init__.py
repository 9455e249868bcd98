"""sknet: Selective Kernel Networks (Li, Wang, Hu, Yang, CVPR 2019) in PyTorch."""

from sknet.data.config import DataConfig, data_config, transforms
from sknet.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    InputShapeError,
    SKNetError,
    UnknownModelError,
)
from sknet.layers import Aggregation, BlockConfig, Bottleneck, Branch, SKConv2d, parse_branches
from sknet.models import ResNeXt, create_model, list_models, model_info
from sknet.models.registry import register_pretrained
from sknet.publish import save_pretrained


def _timm_pretrained(name, num_classes, in_chans):
    from sknet.convert.timm import load_timm_pretrained  # needs timm: imported only when asked for

    return load_timm_pretrained(name, num_classes, in_chans)


register_pretrained("timm", _timm_pretrained)

__version__ = "0.1.0"

__all__ = [
    "Aggregation",
    "BlockConfig",
    "Bottleneck",
    "Branch",
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "DataError",
    "InputShapeError",
    "ResNeXt",
    "SKConv2d",
    "SKNetError",
    "UnknownModelError",
    "__version__",
    "create_model",
    "data_config",
    "list_models",
    "model_info",
    "parse_branches",
    "save_pretrained",
    "transforms",
]
