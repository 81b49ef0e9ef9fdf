"""The clinical evaluation of a cell, after its folds are scored (`experiment.job.complete_cell`).

Calibration per fold and on test (recalibrated by Platt or temperature scaling), operating
points, the Grad-CAM localisation score, external datasets, the model spec that prediction
loads, a model card, and optionally a registered model. Everything fitted here (calibration,
thresholds) sees validation (out-of-fold) predictions only; the test set and external datasets
only get scored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fus2net.cell.artifacts import write_json
from fus2net.cell.context import JobContext
from fus2net.cell.scoring import CellScores
from fus2net.cell.steps import CellEvaluation
from fus2net.cell.summary import CellSummary
from fus2net.clinical.external import score_external_datasets
from fus2net.clinical.lesion_localization import localize
from fus2net.clinical.model_card import Findings, write_model_card
from fus2net.clinical.package import register, register_stored, write_spec
from fus2net.clinical.recalibration import calibrate_cell
from fus2net.evaluation.operating_points import (
    OperatingPoint,
    choose_operating_points,
    operating_point_metrics,
)
from fus2net.inference.loading import load_package
from fus2net.tracking import schema
from fus2net.training.fold import FoldResult

log = logging.getLogger(__name__)


@dataclass
class ClinicalReport:
    """What the step logged to the cell run (metrics by full name) and where its files are."""

    metrics: dict[str, float] = field(default_factory=dict)
    spec_file: Path | None = None
    model_card: Path | None = None
    registered_version: str | None = None


def _operating_points(scores: CellScores, target_sensitivity: float) -> list[OperatingPoint]:
    oof = scores.oof_rows
    try:
        return choose_operating_points(oof.label, oof.prob, target_sensitivity)
    except ValueError as err:
        log.warning("no operating points: %s", err)
        return []


def evaluate_clinically(
    ctx: JobContext, summary: CellSummary, results: dict[int, FoldResult], scores: CellScores
) -> ClinicalReport:
    """Compute and log everything of the module doc to the cell run (and its fold runs)."""
    report = ClinicalReport()
    ev = ctx.cfg.evaluation
    if not ev.enabled:
        return report
    tracker, cell_run = ctx.tracker, summary.cell_run_id
    work = ctx.out / "clinical"
    work.mkdir(parents=True, exist_ok=True)
    test = scores.test_rows
    method = str(ev.calibration)
    calibration = calibrate_cell(tracker, cell_run, scores, method, int(ev.calibration_bins), work)
    points = _operating_points(scores, float(ev.target_sensitivity))
    operating = operating_point_metrics(points, test["label"].to_numpy(), test["prob"].to_numpy())

    report.spec_file = write_spec(ctx, cell_run, results, scores.refit_weights, calibration, points)
    tracker.log_artifacts(cell_run, [report.spec_file], schema.MODEL_DIR)
    model = load_package(report.spec_file)

    localization: dict[str, float] = {}
    if ev.gradcam.enabled and len(test):
        by_path = test.set_index("path")["prob"]
        localization, files = localize(ctx, model, by_path, work / "localization")
        tracker.log_artifacts(cell_run, files, schema.LOCALIZATION_DIR)
    external = score_external_datasets(ctx, cell_run, model, points, work)

    metrics = {**schema.prefixed("calibration", calibration.metrics), **operating, **localization}
    for name, values in external.items():
        metrics.update(schema.prefixed(f"external/{name}", values))
    held_out = ctx.cfg.cv.holdout_source
    if held_out in external:  # one name for every source held out (leave-one-source-out)
        metrics.update(schema.prefixed(schema.HELDOUT, external[held_out]))
    tracker.log_metrics(cell_run, {k: v for k, v in metrics.items() if np.isfinite(v)})
    report.metrics = metrics

    findings = Findings(calibration, operating, localization, external)
    report.model_card = write_model_card(
        ctx, summary, scores, model, findings, work / "model_card.md"
    )
    clinical = {
        "calibration": {"method": calibration.method, **calibration.metrics},
        "operating": operating,
        "localization": localization,
        "external": external,
    }
    tracker.log_artifacts(
        cell_run, [report.model_card, write_json(clinical, work / "clinical.json")]
    )
    if ev.register_model:
        report.registered_version = register(ctx, cell_run, report.spec_file, model)
    return report


def clinical_step() -> CellEvaluation:
    """The clinical step as the job calls it (`fus2net.cell.steps`); the CLI passes it to
    `experiment.job.run_job`."""
    return CellEvaluation(evaluate=evaluate_clinically, register_stored=register_stored)
