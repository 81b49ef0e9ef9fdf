"""Figures of the clinical evaluation: reliability diagrams and Grad-CAM overlay grids (PNG)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fus2net.evaluation.calibration import expected_calibration_error, reliability_bins
from fus2net.inference.gradcam import overlay


def save_reliability_diagram(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str, n_bins: int = 15
) -> Path:
    """Observed malignant fraction against mean predicted probability per bin, one curve per
    (labels, probabilities) pair with its ECE in the legend, and the bins' counts below."""
    fig = Figure(figsize=(5, 6), dpi=110)
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    width = 1.0 / n_bins / max(len(curves), 1)
    for i, (name, (labels, probs)) in enumerate(curves.items()):
        bins = reliability_bins(labels, probs, n_bins)
        filled = bins.counts > 0
        ece = expected_calibration_error(labels, probs, n_bins)
        ax.plot(
            bins.mean_prob[filled],
            bins.positive_rate[filled],
            marker="o",
            label=f"{name} (n={len(labels)}, ECE {ece:.3f})",
        )
        hist.bar(bins.edges[:-1] + i * width, bins.counts, width=width, align="edge", label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed malignant fraction", title=title)
    ax.legend(loc="upper left", fontsize=8)
    hist.set(xlabel="predicted malignant probability", ylabel="images")
    fig.tight_layout()
    fig.savefig(path)
    return path


def save_overlay_grid(
    images: Sequence[np.ndarray],
    cams: Sequence[np.ndarray],
    titles: Sequence[str],
    path: Path,
    masks: Sequence[np.ndarray | None] | None = None,
    columns: int = 4,
) -> Path:
    """Grad-CAM overlays in a grid, the lesion mask outlined in white where one is given."""
    count = len(images)
    rows = max(1, -(-count // columns))
    fig = Figure(figsize=(2.6 * columns, 2.8 * rows), dpi=100)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(count):
        ax = axes.ravel()[i]
        ax.imshow(overlay(images[i], cams[i]))
        mask = masks[i] if masks is not None else None
        if mask is not None and mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=1)
        ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path
