"""Figures logged with every run: ROC curve and confusion matrix (PNG).

Drawn on `matplotlib.figure.Figure` objects, not pyplot: no backend is chosen or changed, and
no figure outlives its function.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay


def save_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """One ROC curve per (labels, malignant probabilities) pair, on one plot."""
    fig = Figure(figsize=(5, 5), dpi=110)
    ax = fig.subplots()
    for name, (labels, probs) in curves.items():
        if len(np.unique(labels)) < 2:
            continue
        RocCurveDisplay.from_predictions(labels, probs, name=name, ax=ax, plot_chance_level=False)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    return path


def save_confusion(matrix: np.ndarray, class_names: list[str], path: Path, title: str) -> Path:
    """Confusion matrix with counts, rows = true class."""
    fig = Figure(figsize=(4, 4), dpi=110)
    ax = fig.subplots()
    ConfusionMatrixDisplay(matrix, display_labels=class_names).plot(ax=ax, colorbar=False)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    return path
