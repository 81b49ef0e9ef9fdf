"""The paper's metrics from predicted malignant probabilities (malignant = positive class)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_score,
    recall_score,
    roc_auc_score,
)

METRICS: tuple[str, ...] = ("accuracy", "sensitivity", "specificity", "precision", "auc")


def binary_metrics(
    labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, precision at `threshold` and ROC AUC.

    A metric with no cases to count is NaN, never 0: sensitivity without a malignant image,
    specificity without a benign one, precision without a malignant call, AUC with one class
    (and every metric of no images). A 0 there would read as "found none" when there was
    nothing to find; callers leave NaN out of what they log and print it as n/a.
    """
    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(probs, dtype=float)
    pred = (probs >= threshold).astype(int)
    positives, negatives, called = (labels == 1).any(), (labels == 0).any(), pred.any()
    nan = math.nan
    return {
        "accuracy": float(accuracy_score(labels, pred)) if len(labels) else nan,
        "sensitivity": float(recall_score(labels, pred, pos_label=1)) if positives else nan,
        "specificity": float(recall_score(labels, pred, pos_label=0)) if negatives else nan,
        "precision": float(precision_score(labels, pred, pos_label=1)) if called else nan,
        "auc": float(roc_auc_score(labels, probs)) if positives and negatives else nan,
    }


def confusion(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """2x2 confusion matrix, rows = true class (benign, malignant), columns = predicted."""
    pred = (np.asarray(probs) >= threshold).astype(int)
    return confusion_matrix(np.asarray(labels, dtype=int), pred, labels=[0, 1])


def mean_std(per_fold: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean and sample standard deviation over folds, as `<metric>_mean` / `<metric>_std`."""
    rows = list(per_fold)
    out: dict[str, float] = {}
    for name in METRICS:
        values = np.array([r[name] for r in rows if name in r], dtype=float)
        values = values[~np.isnan(values)]
        if len(values) == 0:
            continue
        out[f"{name}_mean"] = float(values.mean())
        out[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out


def split_metrics(preds: Any) -> dict[str, dict[str, float]]:
    """The paper's metrics for each `split` of a predictions table (a pandas DataFrame with
    `label`, `prob` and `split` columns)."""
    return {
        str(split): binary_metrics(part["label"].to_numpy(), part["prob"].to_numpy())
        for split, part in preds.groupby("split", sort=False)
    }
