"""The descriptions of cell and fold runs (MLflow's `mlflow.note.content`, Markdown, shown atop
a run's Overview page): what the run scored and how to use it, at a glance, without opening its
metrics. Numbers are rounded to 3 decimals; one that is missing or undefined reads `n/a`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

EXTERNAL_PREFIX = "external/"  # a cell's external sets: external/<name>/<metric>


def number(value: float | None) -> str:
    """`0.812`, or `n/a` for a missing or undefined value (NaN: one class only)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}"


def predict_command(cell_run_id: str) -> str:
    """The command that predicts with a cell's model (fus2net-predict reads it by run id)."""
    return f"fus2net-predict {cell_run_id} IMAGES"


def external_aucs(metrics: Mapping[str, float]) -> dict[str, float]:
    """Each external set's AUC among a cell run's metrics (`external/<name>/auc`), by name."""
    found = {}
    for key, value in metrics.items():
        name = key.removeprefix(EXTERNAL_PREFIX).removesuffix("/auc")
        if key.startswith(EXTERNAL_PREFIX) and key.endswith("/auc") and "/" not in name:
            found[name] = value
    return dict(sorted(found.items()))


def cell_description(
    run_id: str,
    *,
    model: str,
    dataset: str,
    n_folds: int,
    test_scoring: str,
    cv_auc: tuple[float | None, float | None],
    test_auc: float | None,
    test_ci: tuple[float, float] | None = None,
    n_test: int = 0,
    external: Mapping[str, float] | None = None,
    predictable: bool = True,
) -> str:
    """A finished cell run's description: model and dataset, CV AUC mean ± sd, test AUC with
    its 95 % CI, each external set's AUC, and the prediction command (when the cell has the
    model spec that prediction loads)."""
    scoring = f"ensemble of {n_folds} fold models" if test_scoring == "ensemble" else test_scoring
    mean, sd = cv_auc
    lines = [
        f"**{model}** on **{dataset}**, {n_folds}-fold cross-validation; test set scored by the "
        f"{scoring}",
        "",
        f"- CV AUC: {number(mean)} ± {number(sd)} (mean ± sd over {n_folds} folds)",
    ]
    test = f"- test AUC: {number(test_auc)}"
    if test_ci is not None and all(math.isfinite(v) for v in test_ci):
        test += f" (95 % CI {number(test_ci[0])} to {number(test_ci[1])}, bootstrap)"
    if n_test:
        test += f", {n_test} images"
    lines.append(test)
    for name, auc in (external or {}).items():
        lines.append(f"- external `{name}` AUC: {number(auc)}")
    if predictable:
        lines += ["", f"Predict with it: `{predict_command(run_id)}`"]
    return "\n".join(lines)


def fold_description(
    cell_run_id: str,
    fold_label: str,
    *,
    model: str,
    dataset: str,
    val_auc: float | None,
    n_val: int,
    test_auc: float | None,
) -> str:
    """A fold run's description: which fold, its validation AUC (and test AUC), and that its
    cell's ensemble, not the fold alone, is what predicts."""
    return "\n".join(
        [
            f"**{model}** on **{dataset}**, {fold_label}",
            "",
            f"- validation AUC: {number(val_auc)} ({n_val} images)",
            f"- test AUC of this fold's model: {number(test_auc)}",
            "",
            f"Predict with its cell's model, once the cell is finished: "
            f"`{predict_command(cell_run_id)}`",
        ]
    )
