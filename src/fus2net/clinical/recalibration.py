"""The calibration step of a cell's clinical evaluation: measure, fit on out-of-fold, score test.

Every fold run gets its validation ECE and reliability diagram; the cell gets the pooled
out-of-fold and test ECE, the calibration fitted on the out-of-fold predictions only
(`evaluation.calibration`: Platt by default, see `fus2net.evaluation.calibration`), and the test
ECE, log-likelihood and mean probability before and after it. The test set never fits anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fus2net.cell.scoring import CellScores
from fus2net.clinical.plots import save_reliability_diagram
from fus2net.evaluation.calibration import (
    calibrated_ensemble,
    expected_calibration_error,
    fit_calibration,
    negative_log_likelihood,
)
from fus2net.tracking import resume, schema
from fus2net.tracking.mlflow_tracker import MlflowTracker


@dataclass(frozen=True)
class CalibrationResult:
    """The fitted map sigmoid(logit(p) / T + b) and the metrics logged as `calibration/<name>`."""

    method: str
    temperature: float
    bias: float
    metrics: dict[str, float]


def log_fold_calibration(
    tracker: MlflowTracker, cell_run: str, oof: pd.DataFrame, n_bins: int, out: Path
) -> list[float]:
    """`calibration/val_ece` and a reliability diagram in each fold run; the ECEs."""
    # not an earlier, killed attempt of a resumed fold
    fold_runs = schema.finished_folds(resume.fold_runs(tracker, cell_run))
    eces = []
    n_folds = oof["fold"].nunique()
    for fold, part in oof.groupby("fold", sort=True):
        label = schema.fold_label(int(fold), n_folds)
        labels, probs = part["label"].to_numpy(), part["prob"].to_numpy()
        ece = expected_calibration_error(labels, probs, n_bins)
        eces.append(ece)
        run = fold_runs.get(int(fold))
        if run is None:  # not a child of this cell (e.g. resumed): cell-level numbers only
            continue
        (out / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
        figure = save_reliability_diagram(
            {f"{label} validation": (labels, probs)},
            out / f"fold_{fold}" / "reliability_val.png",
            f"Reliability: {label} validation",
            n_bins,
        )
        tracker.log_metrics(run.run_id, {schema.VAL_ECE: ece})
        tracker.log_artifacts(run.run_id, [figure], schema.CALIBRATION_DIR)
    return eces


def calibrate_cell(
    tracker: MlflowTracker, cell_run: str, scores: CellScores, method: str, n_bins: int, work: Path
) -> CalibrationResult:
    """Fit `method` on the cell's out-of-fold predictions, apply it to each test-scoring member
    before their mean, and log the reliability diagrams (each fold's and the cell's)."""
    oof, test = scores.oof_rows, scores.test_rows
    eces = log_fold_calibration(tracker, cell_run, oof, n_bins, work)
    oof_y, oof_p = oof["label"].to_numpy(), oof["prob"].to_numpy()
    test_y, test_p = test["label"].to_numpy(), test["prob"].to_numpy()
    temperature, bias = fit_calibration(oof_y, oof_p, method)
    test_calibrated = calibrated_ensemble(scores.test_members, temperature, bias)
    figure = save_reliability_diagram(
        {
            "out-of-fold": (oof_y, oof_p),
            "test": (test_y, test_p),
            f"test, {method} (T={temperature:.2f}, b={bias:+.2f})": (test_y, test_calibrated),
        },
        work / "reliability.png",
        "Reliability of the malignant probability",
        n_bins,
    )
    tracker.log_artifacts(cell_run, [figure], schema.CALIBRATION_DIR)
    metrics = {
        "val_ece_mean": float(np.nanmean(eces)) if eces else np.nan,
        "oof_ece": expected_calibration_error(oof_y, oof_p, n_bins),
        "temperature": temperature,
        "bias": bias,
        "test_ece": expected_calibration_error(test_y, test_p, n_bins),
        "test_ece_calibrated": expected_calibration_error(test_y, test_calibrated, n_bins),
        "test_nll": negative_log_likelihood(test_y, test_p),
        "test_nll_calibrated": negative_log_likelihood(test_y, test_calibrated),
        # a gap between the mean probability and the prevalence is a prior shift (class
        # balancing in training); the bias of Platt scaling removes it, a temperature cannot
        "test_mean_prob": _mean(test_p),
        "test_mean_prob_calibrated": _mean(test_calibrated),
        "test_prevalence": _mean(test_y),
    }
    return CalibrationResult(str(method), temperature, bias, metrics)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else np.nan
