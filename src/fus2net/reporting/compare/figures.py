"""The comparison's figures: ROC curves of all variants (the paper's Figure 2), metric bars
with error bars (Figure 1), and every fold's value, so a mean never hides its spread.

Matplotlib `Figure` objects without pyplot: no GUI backend and no global state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from fus2net.evaluation.metrics import METRICS
from fus2net.reporting.compare.comparison import Comparison

BAR_METRICS = ("accuracy", "sensitivity", "specificity", "auc")  # the paper's Figure 1
NAMES = {"accuracy": "Accuracy", "sensitivity": "Sensitivity", "specificity": "Specificity",
         "precision": "Precision", "auc": "AUC"}  # fmt: skip
DPI = 110


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def roc_figure(comparison: Comparison, path: Path) -> Path:
    """ROC curves of every variant on one plot: pooled out-of-fold | held-out test."""
    fig = Figure(figsize=(11, 5.2), layout="constrained")
    axes = fig.subplots(1, 2)
    colours = _colours(len(comparison.variants))
    for ax, split, title in zip(
        axes, ("oof", "test"), ("Pooled out-of-fold", "Held-out test set"), strict=True
    ):
        for v, colour in zip(comparison.variants, colours, strict=True):
            part = v.split(split)
            labels, probs = part["label"].to_numpy(int), part["prob"].to_numpy(float)
            if len(np.unique(labels)) < 2:
                continue
            fpr, tpr, _ = roc_curve(labels, probs)
            auc = roc_auc_score(labels, probs)
            ax.plot(fpr, tpr, color=colour, lw=1.6, label=f"{v.label} (AUC {auc:.3f})")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        n = len(comparison.variants[0].split(split))
        ax.set_title(f"{title} (n={n})")
        ax.set_xlabel("1 - specificity (false positive rate)")
        ax.set_ylabel("Sensitivity (true positive rate)")
        ax.set_aspect("equal")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=DPI)
    return path


def metric_bars(comparison: Comparison, path: Path) -> Path:
    """Cross-validation mean of four metrics per variant, error bars one sd over folds."""
    variants = comparison.variants
    rows_of_legend = -(-len(variants) // 4)
    fig = Figure(
        figsize=(max(7.0, 0.45 * len(BAR_METRICS) * len(variants)), 4.4 + 0.25 * rows_of_legend),
        layout="constrained",
    )
    ax = fig.subplots()
    width = 0.8 / len(variants)
    x = np.arange(len(BAR_METRICS))
    for i, (v, colour) in enumerate(zip(variants, _colours(len(variants)), strict=True)):
        means = [v.cv.get(f"{m}_mean", np.nan) for m in BAR_METRICS]
        sds = [v.cv.get(f"{m}_std", 0.0) for m in BAR_METRICS]
        ax.bar(x + (i - (len(variants) - 1) / 2) * width, means, width, yerr=sds, capsize=3,
               label=v.label, color=colour)  # fmt: skip
    ax.set_xticks(x, [NAMES[m] for m in BAR_METRICS])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("Cross-validation mean ± sd")
    ax.set_title("Metrics per variant (validation folds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(
        fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=min(len(variants), 4)
    )
    fig.savefig(path, dpi=DPI)
    return path


def fold_spread(comparison: Comparison, path: Path) -> Path:
    """Each fold's validation value per variant and metric, with the mean marked."""
    variants = comparison.variants
    fig = Figure(
        figsize=(3.0 * len(METRICS), 0.5 * max(len(variants), 4) + 1.6), layout="constrained"
    )
    axes = fig.subplots(1, len(METRICS), sharey=True)
    rng = np.random.default_rng(0)
    colours = _colours(len(variants))
    for ax, metric in zip(axes, METRICS, strict=True):
        for row, (v, colour) in enumerate(zip(variants, colours, strict=True)):
            values = [f[metric] for f in v.cell.folds.values() if metric in f]
            jitter = rng.uniform(-0.12, 0.12, len(values))
            ax.scatter(values, row + jitter, s=18, color=colour, alpha=0.8)
            if values:
                ax.plot([np.mean(values)] * 2, [row - 0.3, row + 0.3], color="black", lw=1.5)
        ax.set_title(NAMES[metric])
        ax.set_xlim(-0.02, 1.02)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(variants)), [v.label for v in variants], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("Per-fold validation metrics (dots: folds; bar: mean)", fontsize=10)
    fig.savefig(path, dpi=DPI)
    return path


def write_figures(comparison: Comparison, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "roc": roc_figure(comparison, out_dir / "roc.png"),
        "metrics": metric_bars(comparison, out_dir / "metrics.png"),
        "folds": fold_spread(comparison, out_dir / "folds.png"),
    }
