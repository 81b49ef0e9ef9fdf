"""The folds of a cell: each trained in its own child run, resumed where a previous job stopped.

A fold run is named `<cell name> · fold k/n` (k from 1, as the logs count; its `fold` tag and
`cv.fold` count from 0), lists its training, validation and test images as dataset inputs,
records MLflow's system metrics while it trains, and logs its model as an MLflow logged model
with the fold's metrics on those datasets.
"""

from __future__ import annotations

import logging
import shutil
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import pandas as pd

from fus2net.cell.artifacts import provenance_files, write_json, write_prediction_artifacts
from fus2net.cell.context import JobContext
from fus2net.cell.summary import CellSummary, FoldMetrics
from fus2net.config.factories import train_fold
from fus2net.evaluation.metrics import split_metrics
from fus2net.experiment import cells
from fus2net.io.files import locked
from fus2net.tracking import descriptions, resume, schema
from fus2net.tracking.lightning_logger import Heartbeat, MlflowRunLogger
from fus2net.training.fold import FitRun, FoldData, FoldResult

log = logging.getLogger(__name__)


def train_folds(
    ctx: JobContext, cell: cells.OpenCell, summary: CellSummary
) -> dict[int, FoldResult]:
    """Train the job's folds that the store lacks, looking again before each; finished ones
    are skipped (scoring reads them back), a fold another live process trains is left to it,
    and a diverged fold (non-finite loss) fails alone."""
    results: dict[int, FoldResult] = {}
    for fold in ctx.folds:
        lock = ctx.cell_dir / f"fold_{fold}" / "fold.lock"
        with locked(lock, wait=False) as mine:
            if not mine:
                log.warning(
                    "%s: another job of this cell is training it (%s is locked); left to it",
                    ctx.fold_name(fold),
                    lock,
                )
                continue
            # Re-read: a job of the same cell may have finished or started it meanwhile.
            cell.folds = resume.current_fold_runs(ctx.tracker, cell.run_id, ctx.stale_after_s)
            fold_result = _train_unless_done(ctx, cell, summary, fold)
            if fold_result is not None:
                results[fold] = fold_result
    return results


def _train_unless_done(
    ctx: JobContext, cell: cells.OpenCell, summary: CellSummary, fold: int
) -> FoldResult | None:
    """Train `fold` unless the store has it finished, or a live process on it (None then)."""
    previous = cell.folds.get(fold)
    status = previous.status if previous is not None else None
    if previous is not None and status == "FINISHED":
        log.info("%s: finished in run %s, not trained again", ctx.fold_name(fold), previous.run_id)
        return None
    if previous is not None and status == "RUNNING":
        owner = previous.run.data.tags
        log.warning(
            "%s: being trained by process %s on %s (run %s); left to it",
            ctx.fold_name(fold),
            owner.get(schema.PID),
            owner.get(schema.HOST),
            previous.run_id,
        )
        return None
    try:
        result, summary.folds[fold] = run_fold(ctx, cell, fold, previous)
    except FloatingPointError as exc:  # diverged: this fold fails, the others go on
        log.error("%s failed: %s", ctx.fold_name(fold), exc)
        return None
    return result


def run_fold(
    ctx: JobContext, cell: cells.OpenCell, fold: int, previous: schema.FoldRun | None = None
) -> tuple[FoldResult, FoldMetrics]:
    """Train fold `fold` in its own child run of `cell`; returns its predictions and metrics.

    `previous` is an unfinished attempt of the fold (a KILLED or FAILED run): that run is
    reopened and training resumes from the fold's last checkpoint, when there is one.
    """
    tracker, data = ctx.tracker, ctx.data
    train_idx, val_idx = data.split.fold(fold)
    fold_tags = {**ctx.tags, schema.ROLE: schema.Role.FOLD.value, schema.FOLD: str(fold)}
    if previous is None:
        owned = {**fold_tags, **resume.owner_tags()}
        name = schema.fold_run_name(cell.name, fold, ctx.n_folds)
        run_id = tracker.start_run(name, owned, parent_id=cell.run_id)
        logged: dict[str, str] = {}
    else:
        run_id, logged = previous.run_id, previous.run.data.params
        cells.reopen(tracker, previous.run, {**fold_tags, schema.RESUMED_FROM: previous.status})
    with cells.working_in(tracker, run_id):
        fold_params = {**ctx.params, "fold": fold, "n_train": len(train_idx), "n_val": len(val_idx)}
        tracker.log_params(run_id, {k: v for k, v in fold_params.items() if k not in logged})
        image_sets = ctx.fold_image_sets(fold)
        tracker.log_datasets(run_id, image_sets.values())
        fold_dir = ctx.fold_dir(fold)
        fold_dir.mkdir(parents=True, exist_ok=True)
        log.info(
            "%s: %d training, %d validation, %d test images",
            ctx.fold_name(fold),
            len(train_idx),
            len(val_idx),
            len(data.split.test),
        )
        checkpoints = ctx.checkpoint_dir(fold)
        with _system_metrics(ctx, run_id, resume=previous is not None):
            result = train_fold(
                ctx.cfg,
                FoldData(data.cache.images, data.cache.labels, train_idx, val_idx, data.split.test),
                seed=int(ctx.cfg.seed) + fold,
                num_classes=len(data.class_names),
                run=FitRun(
                    fold_dir,
                    checkpoints,
                    resume=previous is not None,
                    logger=MlflowRunLogger(tracker, run_id, legacy_names=_legacy_names(cell)),
                    callbacks=[Heartbeat(tracker, [run_id])],  # only fold runs are ever reaped
                    progress_label=ctx.fold_name(fold),
                ),
                segmenter=ctx.lesion_segmenter(),
            )
        if result.start_epoch:
            tracker.set_tags(run_id, {schema.RESUMED_FROM_EPOCH: result.start_epoch})
        metrics = _log_fold(ctx, run_id, fold, result)
        _log_fold_model(ctx, cell.name, run_id, fold, result, metrics, image_sets)
        tracker.set_tags(run_id, {schema.DESCRIPTION: _describe_fold(ctx, cell, fold, metrics)})
        tracker.end_run(run_id, "FINISHED")
    shutil.rmtree(checkpoints, ignore_errors=True)  # the store has it all now
    return result, metrics


def _legacy_names(cell: cells.OpenCell) -> bool:
    """Whether this fold logs its per-epoch metrics under their old names: its cell is from a
    store written before they were renamed (a fold of it logged them so), and all the folds of
    one cell chart alike, a resumed one's curves each one line."""
    return any(schema.uses_legacy_epoch_names(f.run.data.metrics) for f in cell.folds.values())


def _system_metrics(ctx: JobContext, run_id: str, resume: bool) -> AbstractContextManager[None]:
    """MLflow's system metrics of the fold run while it trains (`tracking.system_metrics`)."""
    tracking = ctx.cfg.tracking
    if not tracking.get("system_metrics", False):
        return nullcontext()
    interval = float(tracking.get("system_metrics_interval_s", 10))
    return ctx.tracker.system_metrics(run_id, interval, resume=resume)


def _describe_fold(ctx: JobContext, cell: cells.OpenCell, fold: int, metrics: FoldMetrics) -> str:
    """The fold run's description (fus2net.tracking.descriptions): fold k/n, its AUCs."""
    val, test = metrics.get(schema.Split.VAL, {}), metrics.get(schema.Split.TEST, {})
    return descriptions.fold_description(
        cell.run_id,
        ctx.fold_name(fold),
        model=str(ctx.cfg.model.name),
        dataset=str(ctx.data.description.get("name", "dataset")),
        val_auc=val.get("auc"),
        n_val=len(ctx.data.split.fold(fold)[1]),
        test_auc=test.get("auc"),
    )


def _log_fold_model(
    ctx: JobContext,
    cell_name: str,
    run_id: str,
    fold: int,
    result: FoldResult,
    metrics: FoldMetrics,
    image_sets: dict[schema.Context, schema.ImageSet],
) -> str:
    """The fold's model as an MLflow logged model of its run (the Models tab): its weights,
    and its validation and test metrics, each linked to its dataset input."""
    tracker = ctx.tracker
    tags = {
        schema.ROLE: schema.ModelRole.FOLD.value,
        schema.CELL_KEY: ctx.key,
        schema.FOLD: str(fold),
        schema.DATASET_FINGERPRINT: ctx.data.fingerprint,
    }
    params = {"model.name": ctx.cfg.model.name, "fold": fold, "epochs": result.epochs_run}
    name = schema.model_name(cell_name, fold, ctx.n_folds)
    model_id = tracker.create_model(name, run_id, tags, params)
    if ctx.cfg.tracking.log_checkpoints:
        tracker.log_model_files(model_id, [result.weights])
    for split, context in (
        (schema.Split.VAL, schema.Context.VALIDATION),
        (schema.Split.TEST, schema.Context.TEST),
    ):
        linked = {schema.fold_metric(split, k): v for k, v in metrics.get(split, {}).items()}
        finite = {k: v for k, v in linked.items() if np.isfinite(v)}
        tracker.log_metrics(run_id, finite, model_id=model_id, dataset=image_sets[context])
    tracker.finalize_model(model_id)
    return model_id


def _log_fold(ctx: JobContext, run_id: str, fold: int, result: FoldResult) -> FoldMetrics:
    """The fold's predictions, figures, provenance and weights, into its run (its metrics are
    logged with its model, `_log_fold_model`)."""
    tracker, data, fold_dir = ctx.tracker, ctx.data, ctx.fold_dir(fold)
    preds = pd.concat(
        [
            ctx.predictions(result.val_index, result.val_prob, fold, schema.Split.VAL),
            ctx.predictions(data.split.test, result.test_prob, fold, schema.Split.TEST),
        ],
        ignore_index=True,
    )
    metrics = split_metrics(preds)
    report = fold_dir / "report"
    files = write_prediction_artifacts(preds, report, data.class_names, ctx.fold_name(fold))
    files.append(write_json(metrics, report / "metrics.json"))
    tracker.log_artifacts(run_id, files)
    provenance = provenance_files(ctx.cfg, data.description, data.split.path, fold_dir)
    tracker.log_artifacts(run_id, provenance, schema.PROVENANCE_DIR)
    if ctx.cfg.tracking.log_checkpoints:
        tracker.log_artifacts(run_id, [result.weights], schema.CHECKPOINT_DIR)
    return metrics
