"""Models: Fus2Net, torchvision baselines and any timm network behind a timm-style registry.

>>> from fus2net.models import create_model
>>> model = create_model("fus2net", in_chans=3, num_classes=2)
"""

from . import baselines, fus2net, timm_models  # noqa: F401  (import registers the models)
from .fus2net import Fus2Net
from .layout import ClassifierModel, ModelLayout, model_layout, regularized_weight
from .pretrained import PretrainedWeightsUnavailable, input_normalization
from .registry import (
    create_model,
    list_models,
    list_sources,
    load_pretrained,
    register_model,
)

__all__ = [
    "ClassifierModel",
    "Fus2Net",
    "ModelLayout",
    "PretrainedWeightsUnavailable",
    "create_model",
    "input_normalization",
    "list_models",
    "list_sources",
    "load_pretrained",
    "model_layout",
    "register_model",
    "regularized_weight",
]
