"""The comparison's figures: ROC curves of all variants (the paper's Figure 2), metric bars
with error bars (Figure 1), and every fold's value, so a mean never hides its spread.

Matplotlib `Figure` objects without pyplot: no GUI backend and no global state. Whiskers stay
inside the axes (a metric's sd bar is cut at its range, 0 to 1) and variant names are
shortened to the values that tell them apart and wrapped, so that ten folds or long names
stay legible.
"""

from __future__ import annotations

import textwrap
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
LABEL_WIDTH = 18  # characters per line of a wrapped variant name


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
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
        else:  # one class only: no ROC curve, and no AUC (n/a in the tables)
            ax.text(0.5, 0.5, "no ROC curve: one class only", ha="center", va="center")
    fig.savefig(path, dpi=DPI)
    return path


def short_labels(comparison: Comparison) -> tuple[list[str], str]:
    """Variant names for tick labels: only the values of the naming keys (the keys are the
    axis title, once), wrapped at spaces, so that long names neither overlap nor squeeze."""
    keys = comparison.keys
    labels = []
    for v in comparison.variants:
        text = ", ".join(v.settings[k] for k in keys) if keys else v.label
        if " #" in v.label:  # identical settings told apart by run id
            text += " #" + v.label.rsplit(" #", 1)[1]
        labels.append(textwrap.fill(text, LABEL_WIDTH, break_long_words=False))
    return labels, ", ".join(keys) or "variant"


def whiskers(means: np.ndarray, sds: np.ndarray) -> np.ndarray:
    """Asymmetric error bars of one sd, cut at the metric's range [0, 1]: a mean of 0.6 with an
    sd of 0.55 (two folds) would otherwise draw a whisker to 1.15, past the axis."""
    means, sds = np.nan_to_num(means), np.nan_to_num(sds)
    return np.vstack([np.minimum(sds, means), np.minimum(sds, 1 - means)]).clip(min=0)


def metric_bars(comparison: Comparison, path: Path) -> Path:
    """Cross-validation mean of four metrics per variant, error bars one sd over folds."""
    metric_bars_figure(comparison).savefig(path, dpi=DPI)
    return path


def metric_bars_figure(comparison: Comparison) -> Figure:
    variants = comparison.variants
    labels, keys = short_labels(comparison)
    width_in = max(7.0, 0.45 * len(BAR_METRICS) * len(variants))
    # legend columns that fit the figure's width (about 0.075 in per character at size 8)
    chars = max(len(line) for label in labels for line in label.split("\n"))
    ncols = max(1, min(len(variants), int(width_in // (0.075 * chars + 0.5))))
    lines = max(label.count("\n") + 1 for label in labels)
    legend_rows = -(-len(variants) // ncols)
    fig = Figure(figsize=(width_in, 4.6 + 0.16 * lines * legend_rows), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(variants)
    x = np.arange(len(BAR_METRICS))
    for i, (label, colour) in enumerate(zip(labels, _colours(len(variants)), strict=True)):
        v = variants[i]
        means = np.array([v.cv.get(f"{m}_mean", np.nan) for m in BAR_METRICS])
        sds = np.array([v.cv.get(f"{m}_std", 0.0) for m in BAR_METRICS])
        ax.bar(x + (i - (len(variants) - 1) / 2) * width, means, width,
               yerr=whiskers(means, sds), capsize=3, label=label, color=colour)  # fmt: skip
    ax.set_xticks(x, [NAMES[m] for m in BAR_METRICS])
    ax.set_ylim(-0.02, 1.06)  # room for the caps at 0 and 1
    ax.set_ylabel("Cross-validation mean ± sd (cut at 0 and 1)")
    ax.set_title("Metrics per variant (validation folds)")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(fontsize=8, title=keys, title_fontsize=8, loc="outside lower center", ncols=ncols)
    return fig


def fold_spread(comparison: Comparison, path: Path) -> Path:
    """Each fold's validation value per variant and metric, with the mean marked."""
    fold_spread_figure(comparison).savefig(path, dpi=DPI)
    return path


def fold_spread_figure(comparison: Comparison) -> Figure:
    variants = comparison.variants
    labels, keys = short_labels(comparison)
    lines = max(label.count("\n") + 1 for label in labels)
    row_height = 0.36 + 0.16 * lines  # inches: wrapped names need taller rows
    fig = Figure(
        figsize=(2.6 * len(METRICS) + 0.08 * LABEL_WIDTH, row_height * max(len(variants), 4) + 1.3),
        layout="constrained",
    )
    axes = fig.subplots(1, len(METRICS), sharey=True)
    rng = np.random.default_rng(0)
    colours = _colours(len(variants))
    for ax, metric in zip(axes, METRICS, strict=True):
        for row, (v, colour) in enumerate(zip(variants, colours, strict=True)):
            values = [f[metric] for f in v.cell.folds.values() if metric in f]
            jitter = rng.uniform(-0.2, 0.2, len(values))  # ten folds on one row stay apart
            ax.scatter(values, row + jitter, s=14, color=colour, alpha=0.7, linewidths=0)
            if values:
                ax.plot([np.mean(values)] * 2, [row - 0.35, row + 0.35], color="black", lw=1.5)
        ax.set_title(NAMES[metric])
        ax.set_xlim(-0.04, 1.04)
        ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])  # no "1.0" touching the next "0.0"
        ax.set_xticks([0.25, 0.75], minor=True)
        ax.grid(axis="x", which="both", alpha=0.3)
    axes[0].set_yticks(range(len(variants)), labels, fontsize=8)
    axes[0].set_ylabel(keys)
    axes[0].set_ylim(len(variants) - 0.5, -0.5)  # first variant on top
    n_folds = max((len(v.cell.folds) for v in variants), default=0)
    fig.suptitle(f"Per-fold validation metrics (dots: the {n_folds} folds; bar: mean)", fontsize=10)
    return fig


def write_figures(comparison: Comparison, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "roc": roc_figure(comparison, out_dir / "roc.png"),
        "metrics": metric_bars(comparison, out_dir / "metrics.png"),
        "folds": fold_spread(comparison, out_dir / "folds.png"),
    }
