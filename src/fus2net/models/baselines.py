"""Comparison CNNs (paper Table 3: GoogLeNet; plus common ImageNet classifiers) from torchvision.

Each is a thin subclass of the torchvision class, so parameter names stay torchvision's and a
locally saved torchvision/ImageNet state dict loads through ``pretrained_path`` as it is. Nothing
is downloaded: torchvision's weight enums are never used.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
from torch import Tensor, nn
from torchvision import models as tvm
from torchvision.models.efficientnet import _efficientnet_conf
from torchvision.models.resnet import BasicBlock

from .layers import check_input_size
from .registry import register_model

log = logging.getLogger(__name__)


class TorchvisionBaseline:
    """Mixin adding the project's model contract (see ``registry.ClassifierModel``).

    ``min_input_size`` is 32, the output stride of all four: below it the last feature map is
    made of padding alone (GoogLeNet technically runs from 15 px, DenseNet-121 from 29 px).
    """

    model_name: ClassVar[str]
    first_conv_name: ClassVar[str]
    classifier_name: ClassVar[str]
    min_input_size: ClassVar[int] = 32

    @property
    def regularized_weight(self) -> nn.Parameter:
        """Weight of the classifier's first Linear (the layer the Keras-style L2 applies to)."""
        classifier = self.get_submodule(self.classifier_name)  # type: ignore[attr-defined]
        return next(m for m in classifier.modules() if isinstance(m, nn.Linear)).weight

    def forward(self, x: Tensor) -> Tensor:
        check_input_size(x, self.min_input_size, f"{self.model_name}'s 32x downsampling")
        return super().forward(x)  # type: ignore[misc]

    def _adapt_first_conv(self, in_chans: int) -> None:
        """Replace the RGB input conv by one taking ``in_chans`` channels.

        The new kernel is the old one summed over its RGB channels (for ``in_chans=1``), or
        repeated and rescaled by ``3 / in_chans`` otherwise, as timm does: a grayscale image
        then gets the response the RGB filter gives to the same gray image, and the weights keep
        the architecture's init scale for the new fan-in.
        """
        conv: nn.Conv2d = self.get_submodule(self.first_conv_name)  # type: ignore[attr-defined]
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
        self.set_submodule(self.first_conv_name, new_conv)  # type: ignore[attr-defined]


def _warn_unused_dropout(model_name: str, drop_rate: float) -> None:
    if drop_rate:
        log.info("drop_rate=%s ignored: %s has no classifier dropout", drop_rate, model_name)


class GoogLeNet(TorchvisionBaseline, tvm.GoogLeNet):
    """GoogLeNet (Inception v1) without the auxiliary classifiers; dropout before ``fc``."""

    model_name = "googlenet"
    first_conv_name = "conv1.conv"
    classifier_name = "fc"

    def __init__(self, in_chans: int = 3, num_classes: int = 2, drop_rate: float = 0.2) -> None:
        super().__init__(
            num_classes=num_classes, aux_logits=False, init_weights=True, dropout=drop_rate
        )
        self._adapt_first_conv(in_chans)


class ResNet18(TorchvisionBaseline, tvm.ResNet):
    """ResNet-18; it has no classifier dropout, so ``drop_rate`` is ignored (and logged)."""

    model_name = "resnet18"
    first_conv_name = "conv1"
    classifier_name = "fc"

    def __init__(self, in_chans: int = 3, num_classes: int = 2, drop_rate: float = 0.0) -> None:
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        self._adapt_first_conv(in_chans)
        _warn_unused_dropout(self.model_name, drop_rate)


class DenseNet121(TorchvisionBaseline, tvm.DenseNet):
    """DenseNet-121; no classifier dropout, so ``drop_rate`` is ignored (and logged).

    torchvision's own ``drop_rate`` (dropout inside every dense layer) stays 0, as in the paper
    that introduced it for ImageNet.
    """

    model_name = "densenet121"
    first_conv_name = "features.conv0"
    classifier_name = "classifier"

    def __init__(self, in_chans: int = 3, num_classes: int = 2, drop_rate: float = 0.0) -> None:
        super().__init__(32, (6, 12, 24, 16), 64, num_classes=num_classes)
        self._adapt_first_conv(in_chans)
        _warn_unused_dropout(self.model_name, drop_rate)


class EfficientNetB0(TorchvisionBaseline, tvm.EfficientNet):
    """EfficientNet-B0; ``drop_rate`` is the dropout before its classifier Linear."""

    model_name = "efficientnet_b0"
    first_conv_name = "features.0.0"
    classifier_name = "classifier"

    def __init__(self, in_chans: int = 3, num_classes: int = 2, drop_rate: float = 0.2) -> None:
        # torchvision's B0 stage table (the same call its efficientnet_b0 builder makes).
        stages, last_channel = _efficientnet_conf("efficientnet_b0", width_mult=1.0, depth_mult=1.0)
        super().__init__(
            stages, dropout=drop_rate, num_classes=num_classes, last_channel=last_channel
        )
        self._adapt_first_conv(in_chans)


@register_model
def googlenet(**kwargs) -> GoogLeNet:
    """GoogLeNet, the paper's Table 3 comparison; kwargs as :class:`GoogLeNet`."""
    return GoogLeNet(**kwargs)


@register_model
def resnet18(**kwargs) -> ResNet18:
    """ResNet-18; kwargs as :class:`ResNet18`."""
    return ResNet18(**kwargs)


@register_model
def densenet121(**kwargs) -> DenseNet121:
    """DenseNet-121; kwargs as :class:`DenseNet121`."""
    return DenseNet121(**kwargs)


@register_model
def efficientnet_b0(**kwargs) -> EfficientNetB0:
    """EfficientNet-B0; kwargs as :class:`EfficientNetB0`."""
    return EfficientNetB0(**kwargs)
