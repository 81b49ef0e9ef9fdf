"""Models: Fus2Net and torchvision baselines behind a timm-style registry.

>>> from fus2net.models import create_model
>>> model = create_model("fus2net", in_chans=3, num_classes=2)
"""

from . import baselines, fus2net  # noqa: F401  (import registers the models)
from .fus2net import Fus2Net
from .registry import ClassifierModel, create_model, list_models, load_pretrained, register_model

__all__ = [
    "ClassifierModel",
    "Fus2Net",
    "create_model",
    "list_models",
    "load_pretrained",
    "register_model",
]
