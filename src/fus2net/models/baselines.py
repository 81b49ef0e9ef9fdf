"""Comparison CNNs (paper Table 3: GoogLeNet; plus common ImageNet classifiers) from torchvision.

Each is built by the public ``torchvision.models.get_model(name, weights=None, ...)`` and stays
torchvision's class: the project finds its input conv and classifier in a side table
(``layout.TORCHVISION_LAYOUTS``, as timm's ``pretrained_cfg``), so parameter names stay
torchvision's and a locally saved torchvision/ImageNet state dict loads through
``pretrained_path`` as it is. ``pretrained="imagenet"`` starts from torchvision's ImageNet
weights (its weights API and cache, see ``pretrained.py``); the head is then a fresh
``num_classes`` layer and the input conv adapted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn
from torchvision import models as tvm

from .layout import TORCHVISION_LAYOUTS, guard_input_size
from .pretrained import IMAGENET, torchvision_imagenet_model, torchvision_weights
from .registry import register_model

log = logging.getLogger(__name__)


class _Arch(NamedTuple):
    """How to build one torchvision architecture (its layout is its class's row in
    ``TORCHVISION_LAYOUTS``)."""

    drop_rate: float | None = None  # default classifier dropout; None: the architecture has none
    kwargs: dict[str, Any] | None = None  # further ``get_model`` arguments


# Adding a torchvision architecture is one row here (and one in TORCHVISION_LAYOUTS for a new
# class) and one `_registered` line below.
_ARCHS = {
    # GoogLeNet (Inception v1) without the auxiliary classifiers; dropout before ``fc``.
    "googlenet": _Arch(0.2, {"aux_logits": False, "init_weights": True}),
    "resnet18": _Arch(),
    # torchvision's own DenseNet ``drop_rate`` (inside every dense layer) stays 0, as on ImageNet.
    "densenet121": _Arch(),
    "efficientnet_b0": _Arch(0.2),
}


def adapt_first_conv(model: nn.Module, first_conv: str, in_chans: int) -> None:
    """Replace the RGB input conv `first_conv` by one taking ``in_chans`` channels.

    The new kernel is the old one summed over its RGB channels (for ``in_chans=1``), or
    repeated and rescaled by ``3 / in_chans`` otherwise, as timm does: a grayscale image
    then gets the response the RGB filter gives to the same gray image, and the weights keep
    the architecture's init scale for the new fan-in.
    """
    conv: nn.Conv2d = model.get_submodule(first_conv)  # type: ignore[assignment]
    if in_chans == conv.in_channels:
        return
    new_conv = nn.Conv2d(
        in_chans,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        if in_chans == 1:
            new_conv.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        else:
            repeats = -(-in_chans // conv.in_channels)
            weight = conv.weight.repeat(1, repeats, 1, 1)[:, :in_chans]
            new_conv.weight.copy_(weight * conv.in_channels / in_chans)
        if conv.bias is not None:
            new_conv.bias.copy_(conv.bias)
    model.set_submodule(first_conv, new_conv)


def build_baseline(
    name: str, in_chans: int, num_classes: int, drop_rate: float, pretrained: str | None = None
) -> nn.Module:
    """torchvision's `name` through `get_model`, untrained or from its ImageNet weights
    (`pretrained="imagenet"`), its input conv adapted to `in_chans`."""
    if pretrained not in (None, IMAGENET):
        raise ValueError(f"model.pretrained={pretrained!r}: must be {IMAGENET!r} or null")
    arch = _ARCHS[name]
    kwargs = dict(arch.kwargs or {})
    if arch.drop_rate is not None:
        kwargs["dropout"] = drop_rate
    elif drop_rate:
        log.info("drop_rate=%s ignored: %s has no classifier dropout", drop_rate, name)
    if pretrained is None:
        model = tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    else:
        model = _imagenet_model(name, num_classes, kwargs)
    if in_chans != 3 and hasattr(model, "transform_input"):
        model.transform_input = False  # GoogLeNet's RGB re-normalisation needs three channels
    adapt_first_conv(model, TORCHVISION_LAYOUTS[type(model)].first_conv, in_chans)
    guard_input_size(model, name)
    return model


def _imagenet_model(name: str, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    """`name` from its ImageNet weights (1000 classes), then given a fresh `num_classes` head."""
    # torchvision's weights path sets these itself (GoogLeNet's aux heads) and refuses others
    kwargs = {k: v for k, v in kwargs.items() if k not in ("aux_logits", "init_weights")}
    model = torchvision_imagenet_model(name, **kwargs)
    log.info("%s: starting from torchvision's %s", name, torchvision_weights(name))
    head_path, head = _last_linear(model, TORCHVISION_LAYOUTS[type(model)].classifier)
    model.set_submodule(head_path, nn.Linear(head.in_features, num_classes))
    return model


def _last_linear(model: nn.Module, classifier: str) -> tuple[str, nn.Linear]:
    """(path, layer) of the last Linear in the classifier submodule (the class scores)."""
    module = model.get_submodule(classifier)
    if isinstance(module, nn.Linear):
        return classifier, module
    name, layer = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)][-1]
    return f"{classifier}.{name}", layer


def _registered(name: str) -> Callable[..., nn.Module]:
    """The registered builder of `name`: (in_chans=3, num_classes=2, drop_rate=its default,
    pretrained=None)."""
    default = _ARCHS[name].drop_rate or 0.0

    def builder(
        in_chans: int = 3,
        num_classes: int = 2,
        drop_rate: float = default,
        pretrained: str | None = None,
    ) -> nn.Module:
        return build_baseline(name, in_chans, num_classes, drop_rate, pretrained)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (
        f"torchvision's {name} with `in_chans` input channels, untrained or (pretrained="
        "'imagenet') from its ImageNet weights."
    )
    return register_model(builder)


googlenet = _registered("googlenet")  # the paper's Table 3 comparison
resnet18 = _registered("resnet18")
densenet121 = _registered("densenet121")
efficientnet_b0 = _registered("efficientnet_b0")
