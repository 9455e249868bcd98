"""sknet: Selective Kernel Networks (Li, Wang, Hu, Yang, CVPR 2019) in PyTorch."""

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

__version__ = "0.1.0"

__all__ = [
    "Aggregation",
    "BlockConfig",
    "Bottleneck",
    "Branch",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "InputShapeError",
    "ResNeXt",
    "SKConv2d",
    "SKNetError",
    "UnknownModelError",
    "__version__",
    "create_model",
    "list_models",
    "model_info",
    "parse_branches",
]
