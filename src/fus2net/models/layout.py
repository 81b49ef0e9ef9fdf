"""Where the project's model contract lies in a network: a side table, the model left as it is.

Beyond ``nn.Module`` the trainer needs three facts of every network: its input conv (rebuilt
for ``in_chans``; skipped when a checkpoint's channels differ), its classifier (built for
``num_classes``; its first Linear carries the paper's L2) and the smallest input it accepts.
timm keeps the first two in each model's ``pretrained_cfg`` (``first_conv``, ``classifier``) and
the output stride in its ``feature_info``; torchvision keeps none of them, so each of its
baseline classes has a row here; the project's own networks declare them (``ClassifierModel``).
A library's network thus stays the library's own class: it pickles, copies and compiles as the
library made it, and its state dict keys are the library's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import nn
from torchvision import models as tvm

from .layers import InputSizeGuard


@dataclass(frozen=True)
class ModelLayout:
    """Submodule paths of the input conv and the classifier, and the smallest input side."""

    first_conv: str  # may change with in_chans
    classifier: str  # may change with num_classes
    # 32, the output stride of the torchvision baselines: below it the last feature map is
    # padding alone (GoogLeNet runs from 15 px, DenseNet-121 from 29)
    min_input_size: int = 32


@runtime_checkable
class ClassifierModel(Protocol):
    """A network that declares its own layout (the project's Fus2Net)."""

    first_conv_name: str
    classifier_name: str

    @property
    def min_input_size(self) -> int: ...

    @property
    def regularized_weight(self) -> nn.Parameter: ...


# torchvision's classes (each covers every depth it builds) -> their layout.
TORCHVISION_LAYOUTS: dict[type[nn.Module], ModelLayout] = {
    tvm.GoogLeNet: ModelLayout("conv1.conv", "fc"),
    tvm.ResNet: ModelLayout("conv1", "fc"),
    tvm.DenseNet: ModelLayout("features.conv0", "classifier"),
    tvm.EfficientNet: ModelLayout("features.0.0", "classifier"),
}


def model_layout(model: nn.Module) -> ModelLayout | None:
    """`model`'s layout: its own declaration, timm's `pretrained_cfg`, or torchvision's row;
    None for a network none of them describes."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper
    if isinstance(model, ClassifierModel):
        return ModelLayout(model.first_conv_name, model.classifier_name, model.min_input_size)
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, Mapping):
        reduction = getattr(model, "feature_info", None) or [{"reduction": 32}]
        min_size = int(reduction[-1].get("reduction", 32))
        return ModelLayout(str(cfg["first_conv"]), str(cfg["classifier"]), min_size)
    return TORCHVISION_LAYOUTS.get(type(model))


def regularized_weight(model: nn.Module) -> nn.Parameter:
    """The kernel the Keras-style L2 applies to: the network's own choice (Fus2Net's first dense
    layer), else the weight of the classifier's first Linear."""
    model = getattr(model, "_orig_mod", model)
    if isinstance(model, ClassifierModel):
        return model.regularized_weight
    layout = model_layout(model)
    if layout is None:
        raise TypeError(f"{type(model).__name__}: no known classifier to regularize")
    classifier = model.get_submodule(layout.classifier)
    return next(m for m in classifier.modules() if isinstance(m, nn.Linear)).weight


def guard_input_size(model: nn.Module, name: str) -> None:
    """Make an input below `model`'s minimum fail naming the fix (`check_input_size`), as the
    project's own networks do, by a forward pre-hook: the class stays the library's."""
    layout = model_layout(model)
    if layout is None:
        raise TypeError(f"{type(model).__name__}: no known layout for model {name!r}")
    guard = InputSizeGuard(layout.min_input_size, f"{name}'s 32x downsampling")
    model.register_forward_pre_hook(guard, with_kwargs=True)
