"""Class balance of the training fold: the paper's minority flipping, or class weights.

Flipping is expressed as (record index, flip code) pairs instead of new images, so the cache holds
each image once and the copies are made on the fly; validation and test are never touched.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

BalanceMode = Literal["flip", "none", "weighted"]

AS_IS, HORIZONTAL, VERTICAL = 0, 1, 2


def apply_flip(image: np.ndarray, code: int) -> np.ndarray:
    """(H, W, C) image as is (0), flipped left-right (1) or upside down (2)."""
    if code == AS_IS:
        return image
    if code == HORIZONTAL:
        return image[:, ::-1]
    if code == VERTICAL:
        return image[::-1]
    raise ValueError(f"flip code must be 0, 1 or 2, got {code}")


def _flipped_copies(
    members: np.ndarray, needed: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """`needed` flipped copies of randomly chosen `members`, two (H and V) per chosen image.

    When more than 2 x len(members) copies are needed, the draw is repeated: every round picks
    images without replacement, so copies only repeat once every image has given both flips.
    An odd count gives the last chosen image only its horizontal copy.
    """
    copies: list[tuple[int, int]] = []
    while len(copies) < needed:
        still = needed - len(copies)
        chosen = rng.choice(members, size=min(len(members), -(-still // 2)), replace=False)
        for i in chosen:
            copies.append((int(i), HORIZONTAL))
            copies.append((int(i), VERTICAL))
    return copies[:needed]


def balance_indices(
    train_idx: np.ndarray,
    labels: np.ndarray,
    mode: BalanceMode,
    rng: np.random.Generator,
) -> list[tuple[int, int]]:
    """(record index, flip code) pairs of the training set: every training image as is, plus,
    with mode 'flip', flipped minority copies until every class has the majority's count.

    Paper: 170 of 306 malignant images each add an H and a V copy, 306 + 340 = 646 = benign.
    Modes 'none' and 'weighted' (weights act in the loss or sampler) return the images as is.
    """
    train_idx = np.asarray(train_idx, dtype=np.int64)
    items = [(int(i), AS_IS) for i in train_idx]
    if mode in ("none", "weighted"):
        return items
    if mode != "flip":
        raise ValueError(f"balance.mode must be flip, none or weighted, got {mode!r}")
    train_labels = np.asarray(labels)[train_idx]
    classes, counts = np.unique(train_labels, return_counts=True)
    for c, n in zip(classes, counts, strict=True):
        items += _flipped_copies(train_idx[train_labels == c], int(counts.max() - n), rng)
    return items


def class_weights(labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """float32 'balanced' weights n / (n_classes * n_c) per class index (sklearn's formula).

    A class absent from `labels` (possible in a tiny fold) gets weight 0.
    """
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = num_classes or int(labels.max()) + 1
    present = np.unique(labels)
    weights = np.zeros(num_classes, dtype=np.float32)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights
