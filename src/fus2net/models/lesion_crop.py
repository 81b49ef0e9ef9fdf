"""Lesion-centred crops: a segmentation head finds the lesion, the classifier sees it up close.

Why: a scanner changes everything around a lesion (the frame, its text and calipers, the depth,
the gain of the far field) more than the lesion itself, and a classifier trained on whole frames
of one hospital learns some of that. BUSI and BrEaST both ship lesion masks, so a small
segmentation network (a timm encoder, an FPN-style head at 1/4 resolution) is trained on them
once per job (`fus2net.training.lesion_segmenter`); `LesionCropNet` then runs it on each input,
takes the box around the pixels it calls lesion, squares and widens it by a margin, and crops it
(`torchvision.ops.roi_align`) to the classifier's input. No mask is needed at test time, and
the whole thing is one `nn.Module`: training, external scoring, AdaBN, test-time flips and
stored models go through it unchanged. The segmenter is frozen while the classifier trains.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation, roi_align

from .layout import model_layout, regularized_weight


class LesionCropSettings(BaseModel):
    """`model.lesion_crop` (conf/lesion_crop/segmenter.yaml): the crop, and how the segmenter
    is built and trained. The config's schema types the key by this model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    crop_size: int = Field(160, ge=32)  # the classifier's input side (px)
    margin: float = Field(0.25, ge=0)  # context around the lesion box, per side, share of its side
    min_side: float = Field(0.2, gt=0, le=1)  # smallest crop side, share of the image side
    threshold: float = Field(0.5, gt=0, lt=1)  # lesion probability a pixel counts from
    seg_size: int = Field(128, ge=32)  # the segmenter's input side (px)
    encoder: str = "tf_efficientnet_lite0"  # a timm network that has features_only
    pretrained: bool = True  # the encoder from ImageNet weights a package in the lock ships
    epochs: int = Field(15, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(16, ge=2)

    def training(self) -> dict[str, Any]:
        """The settings the segmenter's weights depend on (the crop's do not)."""
        keys = ("seg_size", "encoder", "pretrained", "epochs", "lr", "batch_size")
        return {key: getattr(self, key) for key in keys}


def segmentation_encoder(name: str, in_chans: int, pretrained: bool) -> nn.Module:
    """timm's `name` as a feature pyramid (strides 4 to 32), from the packaged ImageNet
    weights when `pretrained` (offline; `fus2net.models.packaged_weights`)."""
    import timm

    from .packaged_weights import PackagedWeightsError, timm_weights_file
    from .pretrained import PretrainedWeightsUnavailable

    options: dict[str, Any] = {"features_only": True, "out_indices": (1, 2, 3, 4)}
    if pretrained:
        try:
            file = timm_weights_file(name)
        except (PackagedWeightsError, OSError) as err:
            raise PretrainedWeightsUnavailable(
                f"model.lesion_crop.pretrained=true: {err}; use an encoder whose weights a "
                "package in the lock ships (tf_efficientnet_lite0/1/2) or pretrained=false"
            ) from err
        options["pretrained_cfg_overlay"] = {"file": str(file), "hf_hub_id": None, "url": None}
    # timm names the head's tensors a feature pyramid leaves unused, as a warning: expected here
    builder = logging.getLogger("timm.models._builder")
    level = builder.level
    builder.setLevel(logging.ERROR)
    try:
        return timm.create_model(name, pretrained=pretrained, in_chans=in_chans, **options)
    finally:
        builder.setLevel(level)


class LesionSegmenter(nn.Module):
    """Lesion logits at 1/4 of the input side: each pyramid level projected to `width`
    channels, upsampled to stride 4 and summed (an FPN without the top-down path), then a
    3x3 conv-BN-ReLU and a 1x1 conv."""

    def __init__(
        self,
        encoder: str = "tf_efficientnet_lite0",
        in_chans: int = 3,
        pretrained: bool = False,
        width: int = 48,
    ) -> None:
        super().__init__()
        self.encoder = segmentation_encoder(encoder, in_chans, pretrained)
        channels = self.encoder.feature_info.channels()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.head = nn.Sequential(Conv2dNormActivation(width, width, 3), nn.Conv2d(width, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        features = self.encoder(x)
        size = features[0].shape[-2:]
        merged = sum(
            F.interpolate(lateral(f), size=size, mode="bilinear", align_corners=False)
            for lateral, f in zip(self.lateral, features, strict=True)
        )
        return self.head(merged)


def lesion_boxes(probabilities: Tensor, threshold: float, margin: float, min_side: float) -> Tensor:
    """(B, 4) square boxes (x0, y0, x1, y1) in [0, 1] image coordinates from (B, 1, h, w)
    lesion probabilities: around every pixel at or over `threshold`, widened by `margin` of
    its longer side on each side and to at least `min_side`; the whole image where no pixel
    is lesion. A box may reach past the image (the crop pads with zeros there)."""
    mask = probabilities[:, 0] >= threshold
    height, width = mask.shape[-2:]
    rows, cols = mask.any(2), mask.any(1)
    found = rows.any(1)
    r = torch.arange(height, device=mask.device)
    c = torch.arange(width, device=mask.device)
    y0 = torch.where(rows, r, height).amin(1) / height
    y1 = (torch.where(rows, r, -1).amax(1) + 1) / height
    x0 = torch.where(cols, c, width).amin(1) / width
    x1 = (torch.where(cols, c, -1).amax(1) + 1) / width
    side = torch.maximum(y1 - y0, x1 - x0) * (1 + 2 * margin)
    side = side.clamp(min=min_side)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    whole = torch.tensor([0.5, 0.5, 1.0], device=mask.device)
    cy = torch.where(found, cy, whole[0])
    cx = torch.where(found, cx, whole[1])
    side = torch.where(found, side, whole[2])
    return torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dim=1)


class LesionCropNet(nn.Module):
    """`classifier` on the lesion crop `segmenter` finds in each input (module docstring).

    Declares the project's layout (`ClassifierModel`) through the classifier's, so the L2,
    the input conv and the head are the classifier's; its minimum input is the segmenter's.
    """

    def __init__(
        self, classifier: nn.Module, segmenter: LesionSegmenter, settings: LesionCropSettings
    ) -> None:
        super().__init__()
        layout = model_layout(classifier)
        if layout is None:
            raise TypeError(f"{type(classifier).__name__}: no known layout to crop for")
        self.classifier = classifier
        self.segmenter = segmenter.eval().requires_grad_(False)
        self.settings = settings
        self.first_conv_name = f"classifier.{layout.first_conv}"
        self.classifier_name = f"classifier.{layout.classifier}"
        self._min_input_size = max(32, layout.min_input_size)

    @property
    def min_input_size(self) -> int:
        return self._min_input_size

    @property
    def regularized_weight(self) -> nn.Parameter:
        return regularized_weight(self.classifier)

    def train(self, mode: bool = True) -> LesionCropNet:
        """The classifier trains; the segmenter stays frozen, its statistics included."""
        super().train(mode)
        self.segmenter.eval()
        return self

    @torch.no_grad()
    def lesion_probabilities(self, x: Tensor) -> Tensor:
        """(B, 1, seg_size, seg_size): the segmenter's lesion probability of each pixel."""
        s = self.settings
        small = F.interpolate(x, size=(s.seg_size, s.seg_size), mode="bilinear", antialias=True)
        return torch.sigmoid(self.segmenter(small).float())

    @torch.no_grad()
    def boxes(self, x: Tensor) -> Tensor:
        """(B, 4) crop boxes in [0, 1] image coordinates (`lesion_boxes`)."""
        s = self.settings
        return lesion_boxes(self.lesion_probabilities(x), s.threshold, s.margin, s.min_side)

    def crops(self, x: Tensor) -> Tensor:
        """(B, C, crop, crop): each input's lesion crop, zeros where the box leaves the image."""
        height, width = x.shape[-2:]
        scale = torch.tensor([width, height, width, height], device=x.device, dtype=x.dtype)
        boxes = self.boxes(x).to(x.dtype) * scale
        index = torch.arange(len(x), device=x.device, dtype=x.dtype)[:, None]
        size = self.settings.crop_size
        return roi_align(x, torch.cat([index, boxes], 1), size, sampling_ratio=2, aligned=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.crops(x))


def lesion_crop_net(
    classifier: nn.Module, in_chans: int, options: Mapping[str, Any]
) -> LesionCropNet:
    """`classifier` behind a segmenter of `options` (`model.lesion_crop`), the segmenter's
    weights fresh: the job loads the ones it trained (`fus2net.training.lesion_segmenter`), a
    stored model its own."""
    settings = LesionCropSettings.model_validate(dict(options))
    segmenter = LesionSegmenter(settings.encoder, in_chans, pretrained=False)
    return LesionCropNet(classifier, segmenter, settings)
