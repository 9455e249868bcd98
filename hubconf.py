"""torch.hub entry points, one per registered model.

    model = torch.hub.load("path/to/sknet", "sknet50", source="local")                 # random init
    model = torch.hub.load("path/to/sknet", "sknet50", source="local", pretrained=True)  # timm's weights
    model = torch.hub.load("path/to/sknet", "sknet_tiny", source="local", weights="model.safetensors")

Keyword arguments go to ``sknet.create_model`` (num_classes, weights, features_only, branches, ...).
"""

import os
import sys

dependencies = ["torch", "safetensors", "numpy"]

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if _SRC not in sys.path:  # a plain clone: the package lives under src/
    sys.path.insert(0, _SRC)

from sknet.models import create_model as _create_model  # noqa: E402
from sknet.models import list_models as _list_models  # noqa: E402
from sknet.models import model_info as _model_info  # noqa: E402

_PRETRAINED = "timm's ImageNet weights (sknet50, resnext50/101, senet50/101)."


def _entry(name):
    def entry(pretrained=False, **kwargs):
        return _create_model(name, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"{_model_info(name).description}\n\npretrained=True: {_PRETRAINED}"
    return entry


for _name in _list_models():
    globals()[_name] = _entry(_name)
