"""Scoring a cell from its folds: fold mean and sd, pooled out-of-fold, and the test set.

The test set is scored once per cell, by the ensemble of the fold models (mean probability) or,
with `cv.test_scoring=refit`, by one model refit on every training image. Each metric is
computed here once and handed on (to the summary, the clinical step and the model card). What
scored the test set is the cell's ensemble logged model (`ensemble_model`), its test metrics
linked to it and to the test set's dataset input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fus2net.cell.artifacts import provenance_files, write_json, write_prediction_artifacts
from fus2net.cell.context import JobContext
from fus2net.cell.stored_folds import load_refit_result
from fus2net.cell.summary import CellSummary
from fus2net.config.factories import train_fold
from fus2net.evaluation.metrics import binary_metrics, mean_std
from fus2net.evaluation.stats import bootstrap_intervals
from fus2net.tracking import schema
from fus2net.tracking.predictions import patient_groups
from fus2net.training.fold import FitRun, FoldData, FoldResult

log = logging.getLogger(__name__)


@dataclass
class CellScores:
    """The cell's predictions (`oof` and `test` rows), and what scored the test set."""

    preds: pd.DataFrame
    test_members: np.ndarray  # (members, N) test probabilities before their mean
    oof: dict[str, float]  # metrics of the pooled out-of-fold predictions
    refit_weights: Path | None = None  # the refit model, when it scored the test set
    model_id: str = ""  # the cell's ensemble logged model

    @property
    def oof_rows(self) -> pd.DataFrame:
        return self.preds[self.preds.split == schema.Split.OOF]

    @property
    def test_rows(self) -> pd.DataFrame:
        return self.preds[self.preds.split == schema.Split.TEST]


def _refit(ctx: JobContext) -> FoldResult:
    """One model on every training image (no validation), for the test set."""
    data = ctx.data
    pool = data.split.train_pool()
    log.info("refit on all %d training images for the test set", len(pool))
    return train_fold(
        ctx.cell_cfg,
        FoldData(
            data.cache.images, data.cache.labels, pool, np.zeros(0, dtype=int), data.split.test
        ),
        seed=int(ctx.cfg.seed) + 1000,
        num_classes=len(data.class_names),
        run=FitRun(ctx.out / "refit", progress_label="refit"),
        segmenter=ctx.lesion_segmenter(),
    )


def score_cell(ctx: JobContext, summary: CellSummary, results: dict[int, FoldResult]) -> CellScores:
    """Score the cell from every fold's results; log its metrics and files to the cell run."""
    data, test_idx = ctx.data, ctx.data.split.test
    cell_run = summary.cell_run_id
    refit, refit_stored = None, False
    if ctx.cfg.cv.test_scoring == "refit":  # one the cell run holds (a re-scoring) is read back
        refit = load_refit_result(ctx, ctx.tracker.get_run(cell_run))
        refit_stored = refit is not None
        refit = refit or _refit(ctx)
    if refit is not None:
        members = refit.test_prob[None]
    else:
        members = np.stack([r.test_prob for r in results.values()])
    test_prob = members.mean(axis=0)
    frames = [
        ctx.predictions(r.val_index, r.val_prob, f, schema.Split.OOF) for f, r in results.items()
    ]
    frames.append(
        ctx.predictions(test_idx, test_prob, str(ctx.cfg.cv.test_scoring), schema.Split.TEST)
    )
    scores = CellScores(
        pd.concat(frames, ignore_index=True),
        members,
        oof={},
        refit_weights=refit.weights if refit is not None else None,
    )
    oof = scores.oof_rows
    scores.oof = binary_metrics(oof["label"].to_numpy(), oof["prob"].to_numpy())
    summary.cv = mean_std(m["val"] for m in summary.folds.values() if "val" in m)
    summary.test = binary_metrics(data.cache.labels[test_idx], test_prob)
    summary.n_test = len(test_idx)
    summary.test_auc_ci = _test_auc_interval(ctx, scores.test_rows)

    metrics = {
        **schema.prefixed(schema.CV, summary.cv),
        **schema.prefixed(schema.OOF, scores.oof),
        **by_source_metrics(scores.preds),
        schema.FOLDS_COMPLETED: len(results),
    }
    ctx.tracker.log_metrics(cell_run, _finite(metrics))
    scores.model_id = ensemble_model(ctx, cell_run)
    ctx.tracker.log_metrics(
        cell_run,
        _finite(schema.prefixed(schema.TEST, summary.test)),
        model_id=scores.model_id,
        dataset=ctx.image_set(schema.Context.TEST, test_idx),
    )
    ctx.tracker.finalize_model(scores.model_id)
    report = ctx.out / "report"
    files = write_prediction_artifacts(scores.preds, report, data.class_names, "cell")
    results_json = {
        "folds": summary.folds,
        "cv": summary.cv,
        "test": summary.test,
        "oof": scores.oof,
    }
    files.append(write_json(results_json, report / "results.json"))
    ctx.tracker.log_artifacts(cell_run, files)
    if refit is not None and not refit_stored and ctx.cfg.tracking.log_checkpoints:
        ctx.tracker.log_artifacts(cell_run, [refit.weights], schema.REFIT_DIR)
    provenance = provenance_files(ctx.cell_cfg, data.description, data.split.path, ctx.out)
    ctx.tracker.log_artifacts(cell_run, provenance, schema.PROVENANCE_DIR)
    return scores


def by_source_metrics(preds: pd.DataFrame) -> dict[str, float]:
    """The test and out-of-fold metrics of each member of a pooled dataset (none otherwise):
    a pool can hide a member on which the model does much worse."""
    if schema.SOURCE_COLUMN not in preds.columns:
        return {}
    metrics: dict[str, float] = {}
    for (source, split), rows in preds.groupby([schema.SOURCE_COLUMN, "split"]):
        if split in (schema.Split.TEST, schema.Split.OOF) and len(rows):
            scores = binary_metrics(rows["label"].to_numpy(), rows["prob"].to_numpy())
            metrics |= schema.prefixed(schema.by_source(str(source), str(split)), scores)
    return metrics


def _test_auc_interval(ctx: JobContext, test: pd.DataFrame) -> tuple[float, float] | None:
    """The test AUC's 95 % bootstrap CI for the cell's description: computed as the model card
    and a registered version compute theirs (same resamples, a patient's images together), so
    that all three show one interval."""
    if not len(test):
        return None
    n_boot = int(ctx.cfg.evaluation.bootstrap)
    labels, probs = test["label"].to_numpy(), test["prob"].to_numpy()
    return bootstrap_intervals(labels, probs, patient_groups(test), n_boot=n_boot)["auc"]


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if np.isfinite(v)}


def ensemble_model(ctx: JobContext, cell_run: str) -> str:
    """The cell's ensemble as an MLflow logged model of the cell run: the one it has, else a
    new one listing its members, the newest finished model of each of its fold runs."""
    tracker = ctx.tracker
    found = tracker.find_models(schema.model_filter(schema.ModelRole.ENSEMBLE, cell_run))
    if found:
        return found[0].model_id
    scoring = str(ctx.cfg.cv.test_scoring)
    members: dict[int, str] = {}
    if scoring == "ensemble":
        fold_runs = {r.info.run_id for r in tracker.child_runs(cell_run)}
        by_key = schema.model_filter(schema.ModelRole.FOLD, **{schema.CELL_KEY: ctx.key})
        for model in tracker.find_models(by_key):  # newest first
            fold = int(model.tags.get(schema.FOLD, -1))
            if model.source_run_id in fold_runs and model.status == "READY":
                members.setdefault(fold, model.model_id)
    tags = {
        schema.ROLE: schema.ModelRole.ENSEMBLE.value,
        schema.CELL_KEY: ctx.key,
        schema.DATASET_FINGERPRINT: ctx.data.fingerprint,
        schema.MEMBERS: " ".join(members[f] for f in sorted(members)),
    }
    params = {"model.name": ctx.cfg.model.name, "cv.folds": ctx.n_folds, "test_scoring": scoring}
    name = schema.model_name(tracker.get_run(cell_run).info.run_name or cell_run)
    return tracker.create_model(name, cell_run, tags, params)
