"""Does the model look at the lesion? Scores of saliency maps against lesion masks.

- energy in mask: the share of the map's total mass inside the lesion mask (1 = all inside);
  compare it with the mask's share of the image, what a map spread evenly would score;
- pointing game (Zhang et al., ECCV 2016): a hit when the map's maximum lies in the mask,
  optionally dilated by a tolerance in pixels.

A model that reads burned-in text, calipers or the scanner's frame scores near or below chance.

A lesion-crop model's segmenter is scored against the masks too (`lesion_finding_scores`): does
it find the lesion on images it never saw, and does its crop hold the lesion?
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import binary_dilation


def cam_energy_in_mask(cam: np.ndarray, mask: np.ndarray) -> float:
    """sum(cam inside mask) / sum(cam); NaN for an all-zero map (it points nowhere)."""
    _check_shapes(cam, mask)
    cam = np.clip(cam.astype(np.float64), 0.0, None)
    total = cam.sum()
    return float(cam[mask].sum() / total) if total > 0 else math.nan


def pointing_game_hit(cam: np.ndarray, mask: np.ndarray, tolerance: int = 0) -> bool:
    """Whether the map's maximum (any of tied maxima) falls inside the mask dilated by
    `tolerance` pixels. An all-zero map has no maximum and misses."""
    _check_shapes(cam, mask)
    if not np.any(cam > 0):
        return False
    region = binary_dilation(mask, iterations=tolerance) if tolerance > 0 else mask
    return bool(np.any(region[cam == cam.max()]))


def localization_scores(
    cams: Sequence[np.ndarray], masks: Sequence[np.ndarray], tolerance: int = 0
) -> dict[str, float]:
    """Means over images with a non-empty mask: energy in mask, pointing-game hit rate, the
    mask-area share (the chance level of the energy), and how many images were scored."""
    energy, hits, area = [], [], []
    for cam, mask in zip(cams, masks, strict=True):
        if not mask.any():
            continue
        energy.append(cam_energy_in_mask(cam, mask))
        hits.append(pointing_game_hit(cam, mask, tolerance))
        area.append(float(mask.mean()))
    if not hits:
        return {"n_images": 0.0}
    finite = [e for e in energy if not math.isnan(e)]
    return {
        "cam_energy_in_mask": float(np.mean(finite)) if finite else math.nan,
        "pointing_game": float(np.mean(hits)),
        "mask_area_fraction": float(np.mean(area)),
        "n_images": float(len(hits)),
        "n_empty_cam": float(len(energy) - len(finite)),
    }


def mean_dice(predicted: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    """Mean Dice of bool lesion maps against their masks, over the masks with a lesion pixel
    (NaN when none has one)."""
    scores = [
        2 * np.sum(p & m) / (p.sum() + m.sum())
        for p, m in zip(predicted, masks, strict=True)
        if m.any()
    ]
    return float(np.mean(scores)) if scores else math.nan


def lesion_finding_scores(
    lesion: Sequence[np.ndarray], boxes: np.ndarray, masks: Sequence[np.ndarray]
) -> dict[str, float]:
    """A lesion segmenter and its crops against the true masks (images without a lesion pixel
    in their mask are left out): `dice` (`mean_dice` of the (H, W) bool `lesion` maps);
    `found`, the share of images where it marks any pixel; `centre_in_crop`, the share whose
    mask's centre of mass lies in the image's crop box ((N, 4) x0, y0, x1, y1 in [0, 1]);
    `mask_in_crop`, the mean share of each mask's pixels inside its box; `n_images`."""
    found, centre, covered = [], [], []
    for predicted, mask, box in zip(lesion, masks, boxes, strict=True):
        _check_shapes(predicted, mask)
        if not mask.any():
            continue
        height, width = mask.shape
        found.append(bool(predicted.any()))
        rows, cols = np.nonzero(mask)
        x0, y0, x1, y1 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
        cx, cy = cols.mean() + 0.5, rows.mean() + 0.5  # pixel centres
        centre.append(x0 <= cx <= x1 and y0 <= cy <= y1)
        inside = (cols + 0.5 >= x0) & (cols + 0.5 <= x1) & (rows + 0.5 >= y0) & (rows + 0.5 <= y1)
        covered.append(inside.mean())
    n = len(found)
    return {
        "dice": mean_dice(lesion, masks),
        "found": float(np.mean(found)) if n else math.nan,
        "centre_in_crop": float(np.mean(centre)) if n else math.nan,
        "mask_in_crop": float(np.mean(covered)) if n else math.nan,
        "n_images": float(n),
    }


def _check_shapes(cam: np.ndarray, mask: np.ndarray) -> None:
    if cam.shape != mask.shape:
        raise ValueError(f"map {cam.shape} and mask {mask.shape} differ in shape")
