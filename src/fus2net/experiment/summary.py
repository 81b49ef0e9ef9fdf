"""What a job prints at the end and returns to Hydra (the sweep's objective for Optuna)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fus2net.evaluation.metrics import METRICS
from fus2net.tracking import schema

FoldMetrics = dict[str, dict[str, float]]  # split (val, test) -> metric -> value


@dataclass
class CellSummary:
    """The cell's fold metrics, cross-validation mean and sd, test metrics, and its status."""

    cell_run_id: str
    cell_key: str
    folds: dict[int, FoldMetrics] = field(default_factory=dict)
    cv: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    ui_command: str = ""
    ui_link: str = ""  # the experiment's runs table, in model-training mode
    n_folds: int = 0
    status: str = "FINISHED"  # or SCHEDULED (folds left to other jobs), FAILED, KILLED
    error: str = ""


def stored_summary(
    summary: CellSummary, cell_metrics: dict[str, float], folds: dict[int, schema.FoldRun]
) -> CellSummary:
    """`summary` filled from a finished cell's logged metrics (nothing was trained)."""
    for fold, run in folds.items():
        summary.folds[fold] = {sp: run.metrics(sp) for sp in (schema.Split.VAL, schema.Split.TEST)}
    summary.cv = schema.unprefixed(schema.CV, cell_metrics)
    summary.cv.pop(schema.FOLDS_COMPLETED.split("/", 1)[1], None)
    summary.test = schema.unprefixed(schema.TEST, cell_metrics)
    return summary


def format_summary(summary: CellSummary) -> str:
    """The table printed at the end of a job."""
    header = f"{'':>10}" + "".join(f"{m:>13}" for m in METRICS)
    lines = ["", "Validation metrics per fold (malignant = positive)", header]
    n_folds = summary.n_folds or len(summary.folds)
    for fold, metrics in summary.folds.items():
        val = metrics.get("val", {})
        label = schema.fold_label(fold, n_folds)
        lines.append(f"{label:>10}" + "".join(f"{val.get(m, np.nan):>13.4f}" for m in METRICS))
    if summary.cv:
        lines.append(
            f"{'mean+-sd':>10}"
            + "".join(
                f"{summary.cv.get(m + '_mean', np.nan):>7.4f}"
                f"+-{summary.cv.get(m + '_std', 0):<4.2f}"
                for m in METRICS
            )
        )
    if summary.test:
        lines.append(f"{'test':>10}" + "".join(f"{summary.test[m]:>13.4f}" for m in METRICS))
    lines += [
        "",
        f"MLflow cell run: {summary.cell_run_id} (cell key {summary.cell_key})",
        f"Browse the results: {summary.ui_command}",
    ]
    if summary.ui_link:
        lines.append(f"then open the runs table: {summary.ui_link}")
    return "\n".join(lines)
