"""The folds of a cell: each trained in its own child run, resumed where a previous job stopped."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd

from fus2net.evaluation.metrics import split_metrics
from fus2net.experiment import cells
from fus2net.experiment.artifacts import provenance_files, write_json, write_prediction_artifacts
from fus2net.experiment.context import JobContext
from fus2net.experiment.summary import CellSummary, FoldMetrics
from fus2net.tracking import resume, schema
from fus2net.tracking.lightning_logger import Heartbeat, MlflowRunLogger
from fus2net.training.fold import FoldData, FoldResult, train_model

log = logging.getLogger(__name__)


def train_folds(
    ctx: JobContext, cell: cells.OpenCell, summary: CellSummary
) -> dict[int, FoldResult]:
    """Train the job's folds that the store lacks; finished ones are skipped, a fold another
    live process trains is left to it, and a diverged fold (non-finite loss) fails alone."""
    results: dict[int, FoldResult] = {}
    for fold in ctx.folds:
        previous = cell.folds.get(fold)
        status = previous.status if previous is not None else None
        if previous is not None and status == "FINISHED":
            log.info("fold %d: finished in run %s, not trained again", fold, previous.run_id)
            continue
        if previous is not None and status == "RUNNING":
            owner = previous.run.data.tags
            log.warning(
                "fold %d: being trained by process %s on %s (run %s); left to it",
                fold,
                owner.get(schema.PID),
                owner.get(schema.HOST),
                previous.run_id,
            )
            continue
        try:
            results[fold], summary.folds[fold] = run_fold(ctx, cell.run_id, fold, previous)
        except FloatingPointError as exc:  # diverged: this fold fails, the others go on
            log.error("fold %d failed: %s", fold, exc)
    return results


def run_fold(
    ctx: JobContext, cell_run: str, fold: int, previous: schema.FoldRun | None = None
) -> tuple[FoldResult, FoldMetrics]:
    """Train fold `fold` in its own child run; returns its predictions and metrics.

    `previous` is an unfinished attempt of the fold (a KILLED or FAILED run): that run is
    reopened and training resumes from the fold's last checkpoint, when there is one.
    """
    tracker, data = ctx.tracker, ctx.data
    train_idx, val_idx = data.split.fold(fold)
    fold_tags = {**ctx.tags, schema.ROLE: schema.Role.FOLD.value, schema.FOLD: str(fold)}
    if previous is None:
        owned = {**fold_tags, **resume.owner_tags()}
        run_id = tracker.start_run(f"fold-{fold}", owned, parent_id=cell_run)
        logged: dict[str, str] = {}
    else:
        run_id, logged = previous.run_id, previous.run.data.params
        cells.reopen(tracker, previous.run, {**fold_tags, schema.RESUMED_FROM: previous.status})
    with cells.working_in(tracker, run_id):
        fold_params = {**ctx.params, "fold": fold, "n_train": len(train_idx), "n_val": len(val_idx)}
        tracker.log_params(run_id, {k: v for k, v in fold_params.items() if k not in logged})
        fold_dir = ctx.fold_dir(fold)
        fold_dir.mkdir(parents=True, exist_ok=True)
        log.info(
            "fold %d/%d: %d training, %d validation, %d test images",
            fold + 1,
            ctx.n_folds,
            len(train_idx),
            len(val_idx),
            len(data.split.test),
        )
        checkpoints = ctx.checkpoint_dir(fold)
        result = train_model(
            ctx.cfg,
            FoldData(data.cache.images, data.cache.labels, train_idx, val_idx, data.split.test),
            seed=int(ctx.cfg.seed) + fold,
            num_classes=len(data.class_names),
            out_dir=fold_dir,
            logger=MlflowRunLogger(tracker, run_id),
            checkpoint_dir=checkpoints,
            resume=previous is not None,
            callbacks=[Heartbeat(tracker, [run_id])],  # only fold runs are ever reaped
        )
        if result.start_epoch:
            tracker.set_tags(run_id, {schema.RESUMED_FROM_EPOCH: result.start_epoch})
        metrics = _log_fold(ctx, run_id, fold, result)
        tracker.end_run(run_id, "FINISHED")
    shutil.rmtree(checkpoints, ignore_errors=True)  # the store has it all now
    return result, metrics


def _log_fold(ctx: JobContext, run_id: str, fold: int, result: FoldResult) -> FoldMetrics:
    """The fold's predictions, metrics, figures, provenance and weights, into its run."""
    tracker, data, fold_dir = ctx.tracker, ctx.data, ctx.fold_dir(fold)
    preds = pd.concat(
        [
            ctx.predictions(result.val_index, result.val_prob, fold, schema.Split.VAL),
            ctx.predictions(data.split.test, result.test_prob, fold, schema.Split.TEST),
        ],
        ignore_index=True,
    )
    metrics = split_metrics(preds)
    flat = {schema.fold_metric(sp, name): v for sp, m in metrics.items() for name, v in m.items()}
    tracker.log_metrics(run_id, {k: v for k, v in flat.items() if np.isfinite(v)})
    report = fold_dir / "report"
    files = write_prediction_artifacts(preds, report, data.class_names, f"fold {fold}")
    files.append(write_json(metrics, report / "metrics.json"))
    tracker.log_artifacts(run_id, files)
    provenance = provenance_files(ctx.cfg, data.description, data.split.path, fold_dir)
    tracker.log_artifacts(run_id, provenance, schema.PROVENANCE_DIR)
    if ctx.cfg.tracking.get("log_checkpoints", True):
        tracker.log_artifacts(run_id, [result.weights], schema.CHECKPOINT_DIR)
    return metrics
