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
from sknet.models.hub_names import TIMM_COUNTERPARTS
from sknet.models.registry import register_pretrained
from sknet.publish import save_pretrained
from sknet.timm_models import register_when_timm_is_imported, timm_model_name


def _fetch_timm_weights(name: str):
    # imported when weights are fetched: the models, and `import sknet`, do not load the converters
    from sknet.convert.timm import fetch_timm_weights

    return fetch_timm_weights(name)


register_pretrained("timm", _fetch_timm_weights, TIMM_COUNTERPARTS)  # timm itself is imported when they are fetched
register_when_timm_is_imported()  # sknet's models become timm's too: now, or when timm is imported

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
    "timm_model_name",
    "transforms",
]
