"""Grad-CAM maps of any registry model, and of an ensemble of them, with pytorch-grad-cam.

The target layer is the last feature map the classifier sees (Fus2Net: ``block2``; ResNet:
``layer4``; GoogLeNet: ``inception5b``; DenseNet / EfficientNet: ``features``). It is found by
running the model once and taking the last top-level child whose output is still a spatial
map, so a new registry model needs no entry here; ``evaluation.gradcam.layer`` overrides it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from fus2net.models.lesion_crop import LesionCropNet

CLASSIFIER = "classifier"  # LesionCropNet's classifier, whose maps lie on the crop

CamTarget = Literal["predicted", "malignant"]


def find_cam_layer(model: nn.Module, input_size: int, in_chans: int) -> str:
    """Name of the last top-level child whose output is a (N, C, H, W) map larger than 1x1
    (of a lesion-crop model: its classifier's, on the crop)."""
    if isinstance(model, LesionCropNet):
        crop = model.settings.crop_size
        return f"{CLASSIFIER}.{find_cam_layer(model.classifier, crop, in_chans)}"
    calls: list[tuple[str, tuple[int, ...]]] = []
    hooks = [
        child.register_forward_hook(
            lambda _m, _i, out, name=name: calls.append((name, tuple(getattr(out, "shape", ()))))
        )
        for name, child in model.named_children()
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        for hook in hooks:
            hook.remove()
    spatial = [name for name, shape in calls if len(shape) == 4 and shape[2] * shape[3] > 1]
    if not spatial:
        raise ValueError(
            f"{type(model).__name__} has no top-level layer with a spatial output at "
            f"{input_size} px; set evaluation.gradcam.layer to a submodule name"
        )
    return spatial[-1]


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    target: CamTarget = "predicted",
    batch_size: int = 16,
) -> np.ndarray:
    """(N, H, W) float32 maps in [0, 1] at the input's size, one per standardised image.

    target 'predicted' explains the class the model chose for each image (what a reader sees);
    'malignant' always explains the malignant logit.
    """
    model.eval()
    if isinstance(model, LesionCropNet) and layer.startswith(f"{CLASSIFIER}."):
        return _lesion_crop_cam(model, images, layer.removeprefix(f"{CLASSIFIER}."), target)
    try:
        target_layer = model.get_submodule(layer)
    except AttributeError as err:
        names = ", ".join(name for name, _ in model.named_children())
        raise ValueError(
            f"evaluation.gradcam.layer={layer!r} is not a submodule of {type(model).__name__}; "
            f"top-level layers: {names}"
        ) from err
    # imported here: loading a model for training or benchmarking must not need grad-cam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    maps = []
    with GradCAM(model=model, target_layers=[target_layer]) as cam:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            targets = None if target == "predicted" else [ClassifierOutputTarget(1)] * len(batch)
            maps.append(cam(input_tensor=batch, targets=targets).astype(np.float32))
    return np.concatenate(maps) if maps else np.zeros((0, *images.shape[2:]), np.float32)


def _lesion_crop_cam(
    model: LesionCropNet, images: torch.Tensor, layer: str, target: CamTarget
) -> np.ndarray:
    """The classifier's maps on each lesion crop, put back where the crop lies in its image
    (zero outside it): a map over the image a reader sees, as for a whole-image model."""
    with torch.no_grad():
        boxes = model.boxes(images).cpu().numpy()
        crops = model.crops(images)
    inner = grad_cam(model.classifier, crops, layer, target)
    size = images.shape[-1]
    maps = np.zeros((len(images), *images.shape[-2:]), np.float32)
    for out, cam, (x0, y0, x1, _) in zip(maps, inner, boxes * size, strict=True):
        left, top = round(float(x0)), round(float(y0))
        side = max(1, round(float(x1 - x0)))
        placed = np.asarray(Image.fromarray(cam).resize((side, side), Image.Resampling.BILINEAR))
        rows = slice(max(top, 0), min(top + side, out.shape[0]))
        cols = slice(max(left, 0), min(left + side, out.shape[1]))
        out[rows, cols] = placed[
            rows.start - top : rows.stop - top, cols.start - left : cols.stop - left
        ]
    return maps


def ensemble_grad_cam(
    models: Sequence[nn.Module],
    images: torch.Tensor,
    layers: Sequence[str],
    target: CamTarget = "predicted",
) -> np.ndarray:
    """The mean of each member's map, each already scaled to [0, 1] by pytorch-grad-cam.

    With target 'predicted' every member explains its own decision, as the ensemble's mean
    probability averages them.
    """
    maps = [grad_cam(m, images, layer, target) for m, layer in zip(models, layers, strict=True)]
    return np.mean(maps, axis=0)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """(H, W, 3) uint8: the map as a jet heat map over an (H, W) or (H, W, 1|3) uint8 image.

    `cam` is resized (bilinear) to the image, so an overlay can be drawn on the original file.
    """
    rgb = (
        image
        if image.ndim == 3 and image.shape[2] == 3
        else np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    )
    height, width = rgb.shape[:2]
    if cam.shape != (height, width):
        cam = np.asarray(
            Image.fromarray(cam.astype(np.float32)).resize(
                (width, height), Image.Resampling.BILINEAR
            )
        )
    cam = np.clip(cam, 0.0, 1.0)
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(
        rgb.astype(np.float32) / 255.0, cam, use_rgb=True, image_weight=1 - alpha
    )
