"""Decision thresholds a clinic would use, chosen on validation predictions and reported on test.

A threshold of 0.5 is arbitrary for a screening tool: missing a cancer costs more than a
biopsy of a benign lesion. Two operating points are chosen on out-of-fold (validation)
predictions only, then applied unchanged to the test set, so the test figures stay honest:

- ``sens<NN>``: the highest threshold that still reaches the target sensitivity (default 95 %,
  the screening use), i.e. the best specificity at that sensitivity;
- ``youden``: the threshold maximising Youden's J = sensitivity + specificity - 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_curve

from fus2net.evaluation.metrics import binary_metrics


@dataclass(frozen=True)
class OperatingPoint:
    """A named threshold on the malignant probability and what it gives where it was chosen."""

    name: str
    threshold: float
    chosen_on: dict[str, float]  # metrics on the selection predictions (out-of-fold)


def sensitivity_name(target: float) -> str:
    """`sens95` for 0.95: the metric-name prefix of a target-sensitivity operating point."""
    if not 0 < target <= 1:
        raise ValueError(f"evaluation.target_sensitivity must be in (0, 1], got {target}")
    return f"sens{round(target * 100):d}"


def _roc(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=int)
    if len(np.unique(labels)) < 2:
        raise ValueError(
            "an operating point needs benign and malignant validation predictions; "
            f"got only class {np.unique(labels).tolist()}"
        )
    fpr, tpr, thresholds = roc_curve(labels, probs, drop_intermediate=False)
    # roc_curve's first threshold is +inf (nothing positive); keep thresholds in [0, 1].
    return fpr, tpr, np.clip(thresholds, 0.0, 1.0)


def threshold_for_sensitivity(labels: np.ndarray, probs: np.ndarray, target: float) -> float:
    """The highest threshold t with sensitivity(prob >= t) >= target on these predictions."""
    _, tpr, thresholds = _roc(labels, probs)
    reached = np.flatnonzero(tpr >= target - 1e-12)
    return float(thresholds[reached[0]])


def youden_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The threshold maximising sensitivity + specificity - 1 (the first of ties: the highest)."""
    fpr, tpr, thresholds = _roc(labels, probs)
    return float(thresholds[int(np.argmax(tpr - fpr))])


def choose_operating_points(
    labels: np.ndarray, probs: np.ndarray, target_sensitivity: float = 0.95
) -> list[OperatingPoint]:
    """The target-sensitivity and Youden points, chosen on (out-of-fold) validation predictions."""
    points = []
    for name, threshold in (
        (
            sensitivity_name(target_sensitivity),
            threshold_for_sensitivity(labels, probs, target_sensitivity),
        ),
        ("youden", youden_threshold(labels, probs)),
    ):
        points.append(OperatingPoint(name, threshold, binary_metrics(labels, probs, threshold)))
    return points


def operating_point_metrics(
    points: list[OperatingPoint], test_labels: np.ndarray, test_probs: np.ndarray
) -> dict[str, float]:
    """`operating/<name>_threshold`, `..._oof_<metric>` and `..._test_<metric>` (AUC left out:
    it does not depend on the threshold)."""
    out: dict[str, float] = {}
    for point in points:
        prefix = f"operating/{point.name}"
        out[f"{prefix}_threshold"] = point.threshold
        for name in ("sensitivity", "specificity"):
            out[f"{prefix}_oof_{name}"] = point.chosen_on[name]
        if len(test_labels):
            test = binary_metrics(test_labels, test_probs, point.threshold)
            for name in ("sensitivity", "specificity", "precision", "accuracy"):
                out[f"{prefix}_test_{name}"] = test[name]
    return {k: v for k, v in out.items() if not math.isnan(v)}
