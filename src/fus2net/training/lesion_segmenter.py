"""Train the lesion segmenter of `model.lesion_crop` on the masks a dataset ships, once per job.

A plain loop, not a Lightning fit: one small network, no validation, no checkpoints (the job
keeps the weights it returns in its cache and in every fold model's state dict). Images and
masks go through the same flips and affine moves (albumentations keeps them aligned); the loss
is binary cross-entropy plus soft Dice, which does not let the background's many pixels drown
a small lesion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from fus2net.data.transforms import normalize
from fus2net.evaluation.localization import mean_dice
from fus2net.models.lesion_crop import LesionCropSettings, LesionSegmenter
from fus2net.models.pretrained import Normalization

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmenterFit:
    """The trained segmenter's weights, and how well it fits its own training masks."""

    state_dict: dict[str, Tensor]
    n_images: int
    final_loss: float
    train_dice: float


def _augmentation(size: int) -> A.Compose:
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.Affine(scale=(0.8, 1.2), translate_percent=(-0.1, 0.1), rotate=(-10, 10), p=0.7),
            A.RandomBrightnessContrast(0.2, 0.2, p=0.5),
            A.Resize(size, size),
        ]
    )


def _batch(
    images: np.ndarray,
    masks: np.ndarray,
    normalization: Normalization | None,
    transform: A.Compose | None,
    size: int,
) -> tuple[Tensor, Tensor]:
    xs, ys = [], []
    for image, mask in zip(images, masks, strict=True):
        if transform is not None:
            out = transform(image=np.asarray(image), mask=mask.astype(np.uint8))
            image, mask = out["image"], out["mask"]
        xs.append(normalize(image, normalization).transpose(2, 0, 1))
        ys.append(np.asarray(mask, dtype=np.float32)[None])
    x, y = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
    if transform is None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        y = F.interpolate(y, size=(size, size), mode="nearest")
    return x, y


def segmentation_loss(logits: Tensor, target: Tensor) -> Tensor:
    """BCE + (1 - soft Dice) of (B, 1, h, w) logits against (B, 1, H, W) masks."""
    target = F.interpolate(target, size=logits.shape[-2:], mode="area")
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dice = (2 * (p * target).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return bce + (1 - dice).mean()


@torch.no_grad()
def segmenter_dice(
    segmenter: LesionSegmenter,
    images: np.ndarray,
    masks: np.ndarray,
    settings: LesionCropSettings,
    normalization: Normalization | None,
) -> float:
    """Mean Dice of the thresholded predictions against `masks` (images with a lesion only)."""
    segmenter.eval()
    predicted, truth = [], []
    for start in range(0, len(images), settings.batch_size):
        stop = start + settings.batch_size
        x, y = _batch(images[start:stop], masks[start:stop], normalization, None, settings.seg_size)
        logits = segmenter(x)
        truth += list((F.interpolate(y, size=logits.shape[-2:], mode="area") >= 0.5)[:, 0].numpy())
        predicted += list((torch.sigmoid(logits) >= settings.threshold)[:, 0].numpy())
    return mean_dice(predicted, truth)


def train_segmenter(
    images: np.ndarray,
    masks: np.ndarray,
    settings: LesionCropSettings,
    normalization: Normalization | None,
    seed: int,
    progress: bool = True,
) -> SegmenterFit:
    """A `LesionSegmenter` of `settings` fitted to (N, S, S, C) uint8 `images` and their
    (N, S, S) bool `masks` (an image without a lesion teaches background)."""
    if len(images) == 0:
        raise ValueError(
            "model.lesion_crop: no training image has a lesion mask; the segmenter needs a "
            "dataset that ships masks (BUSI, BrEaST, a folder with *_mask files)"
        )
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    segmenter = LesionSegmenter(settings.encoder, images.shape[-1], settings.pretrained)
    optimizer = torch.optim.AdamW(segmenter.parameters(), lr=settings.lr, weight_decay=1e-4)
    steps = settings.epochs * -(-len(images) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=steps)
    transform = _augmentation(settings.seg_size)
    loss = torch.tensor(float("nan"))
    bar = tqdm(range(settings.epochs), desc="lesion segmenter", disable=not progress)
    for _ in bar:
        segmenter.train()
        order = rng.permutation(len(images))
        for start in range(0, len(order), settings.batch_size):
            pick = np.sort(order[start : start + settings.batch_size])
            x, y = _batch(images[pick], masks[pick], normalization, transform, settings.seg_size)
            loss = segmentation_loss(segmenter(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    dice = segmenter_dice(segmenter, images, masks, settings, normalization)
    log.info(
        "lesion segmenter: %d images, last loss %.3f, Dice on them %.3f",
        len(images),
        loss.item(),
        dice,
    )
    state = {k: v.detach().clone() for k, v in segmenter.state_dict().items()}
    return SegmenterFit(state, len(images), float(loss.item()), dice)
