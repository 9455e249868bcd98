"""Model families and the registry. Importing this package registers every model."""

from sknet.models import ablations, mobilenet, resnext, shufflenet, small  # noqa: F401  (importing registers the families)
from sknet.models.registry import ModelInfo, create_model, list_models, model_info, register_model
from sknet.models.resnext import ResNeXt

__all__ = ["ModelInfo", "ResNeXt", "create_model", "list_models", "model_info", "register_model"]
