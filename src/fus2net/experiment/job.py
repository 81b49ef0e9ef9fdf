"""One job = one cell: k-fold cross-validation, held-out test scoring, and its MLflow runs.

MLflow layout (`fus2net.tracking.schema`): one parent run per cell (one resolved configuration,
folds aside) tagged with a deterministic cell key and the sweep, and one child run per fold.
Everything a comparison needs (fold metrics, pooled out-of-fold and test predictions, splits,
config) is logged there. The job reads top to bottom: check, build the context once, open the
cell, train the folds it lacks, then complete the cell when every fold is done.
"""

from __future__ import annotations

import logging

import pandas as pd
import torch
from omegaconf import DictConfig

from fus2net.cell.context import JobContext, build_context, threads
from fus2net.cell.scoring import score_cell
from fus2net.cell.steps import CellEvaluation
from fus2net.cell.stored_folds import load_fold_result, missing_models
from fus2net.cell.summary import CellSummary, stored_summary
from fus2net.config.preflight import check_config, check_tracking
from fus2net.config.validate import validate_config
from fus2net.experiment import cells
from fus2net.experiment.folds import train_folds
from fus2net.experiment.holdout import holdout_config
from fus2net.experiment.interrupts import stop_on_signals
from fus2net.experiment.loso_summary import log_protocol_run
from fus2net.io.files import as_disk_full, locked
from fus2net.tracking import resume, schema
from fus2net.training.fold import FoldResult, quiet_lightning

log = logging.getLogger(__name__)

RESCORE_LOCK = "rescore.lock"  # in the cell's folder: held while a job scores a finished cell again


def run_job(cfg: DictConfig, clinical: CellEvaluation) -> CellSummary:
    """Check, then train the folds of the cell (or `cv.fold`) the tracking store lacks, score
    the test set once every fold is done, and log it all.

    A re-run finds the cell by its key: finished folds are skipped, an interrupted fold resumes
    from its last checkpoint, a finished cell is not trained again (fus2net.experiment.cells),
    though it is scored again from its stored models when evaluation-only settings ask for
    more (`_rescore`), and its ensemble is registered when `evaluation.register_model` asks
    for it now. A diverged fold (non-finite loss) fails alone; the other folds and jobs go on.
    `clinical` is the clinical step (fus2net.clinical, built by the CLI and passed down), run
    on each cell once its folds are scored.
    """
    validate_config(cfg)  # the typed schema: every key, before anything is read
    cfg, protocol = holdout_config(cfg)  # leave-one-source-out: a member becomes external
    check_config(cfg)
    check_tracking(str(cfg.tracking.uri))  # before anything is prepared or written
    torch.set_num_threads(threads(cfg))
    quiet_lightning()
    try:
        with stop_on_signals():
            return _run_cell(cfg, clinical, protocol)
    except Exception as exc:  # a full disk anywhere, runs already ended FAILED on the way
        full = as_disk_full(exc, store=cells.store_file(str(cfg.tracking.uri)))
        if full is None or full is exc:
            raise
        raise full from exc


def _run_cell(
    cfg: DictConfig, clinical: CellEvaluation, protocol: str | None = None
) -> CellSummary:
    """Build the job's context, open its cell and train what the store lacks."""
    ctx = build_context(cfg, protocol)
    cell = cells.open_cell(ctx)
    summary = CellSummary(
        cell.run_id,
        ctx.key,
        ui_command=ctx.tracker.ui_command(),
        ui_link=ctx.tracker.runs_table_link(),
        n_folds=ctx.n_folds,
    )
    if cell.finished:
        assert cell.run is not None
        if _rescore(ctx, cell, summary, clinical):
            return summary
        if cfg.evaluation.register_model:  # asked for now, after its training
            clinical.register_stored(ctx, cell.run_id)
        log_protocol_run(ctx)  # a protocol whose last cell finished elsewhere
        return stored_summary(summary, cell.run.data.metrics, cell.folds)
    with cells.working_in(ctx.tracker, cell.run_id):
        _log_skipped_images(ctx, cell.run_id)
        results = train_folds(ctx, cell, summary)
        complete_cell(ctx, summary, results, clinical)
    return summary


def _rescore(
    ctx: JobContext, cell: cells.OpenCell, summary: CellSummary, clinical: CellEvaluation
) -> bool:
    """Score finished `cell` again, from the models its runs hold, when the job's
    evaluation-only settings ask for what it was not scored with (an external set, Grad-CAM):
    no fold is trained, and the new scores are logged to the same cell run. False when
    nothing is asked, or the store lacks its models (`tracking.log_checkpoints=false`)."""
    assert cell.run is not None
    if not cells.evaluation_asked(ctx, cell.run):
        return False
    # One job at a time (jobs of a sweep over such a key, `cv.fold=0,1` jobs of the cell): the
    # next one looks again once it is done, at what that one scored.
    with locked(ctx.cell_dir / RESCORE_LOCK):
        cell.run = ctx.tracker.get_run(cell.run_id)
        asked = cells.evaluation_asked(ctx, cell.run)
        if not asked:
            return False
        what = ", ".join(  # an external set by its name (its value is a digest of its keys)
            k if k.startswith("eval_datasets.") else f"{k}={v}" for k, v in asked.items()
        )
        missing = missing_models(ctx, cell.run, cell.folds)
        if missing:
            log.warning(
                "cell %s is not scored again for %s: the store lacks the models of %s "
                "(tracking.log_checkpoints=false, or a refit model an earlier version did not "
                "log without the clinical step); its stored scores are shown",
                ctx.key,
                what,
                ", ".join(missing),
            )
            return False
        log.info("cell %s: scoring it again from its stored models for %s", ctx.key, what)
        cells.reopen(ctx.tracker, cell.run, {schema.RESUMED_FROM: cell.run.info.status})
        ctx.tracker.delete_tag(cell.run_id, schema.RESCORE_ERROR)
        with cells.working_in(ctx.tracker, cell.run_id, finished=True):
            complete_cell(ctx, summary, {}, clinical)
    return True


def _log_skipped_images(ctx: JobContext, cell_run: str) -> None:
    if ctx.data.skipped:
        skipped = ctx.out / "skipped_images.csv"
        pd.DataFrame([vars(p) for p in ctx.data.skipped]).to_csv(skipped, index=False)
        ctx.tracker.log_artifacts(cell_run, [skipped])


def complete_cell(
    ctx: JobContext,
    summary: CellSummary,
    results: dict[int, FoldResult],
    clinical: CellEvaluation,
) -> None:
    """Score and close the cell if every fold is done, else record why not (experiment.cells).

    Folds other jobs trained are read back from the store; of two jobs finishing at the same
    moment, the second look of at least one sees every fold done.
    """
    for look in range(2):
        folds = resume.current_fold_runs(ctx.tracker, summary.cell_run_id, ctx.stale_after_s)
        if cells.all_finished(folds, ctx.n_folds):
            for fold in range(ctx.n_folds):
                if fold not in results:
                    results[fold], summary.folds[fold] = load_fold_result(ctx, folds[fold].run)
            summary.folds = dict(sorted(summary.folds.items()))
            scored = dict(sorted(results.items()))
            scores = score_cell(ctx, summary, scored)
            clinical.evaluate(ctx, summary, scored, scores)
            cells.record_scoring(ctx, summary.cell_run_id)
            cells.close_finished(ctx.tracker, summary, sorted(scored))
            log_protocol_run(ctx)  # leave-one-source-out, once complete
            return
        if look:
            return
        cells.close_unfinished(ctx.tracker, summary, folds, ctx.n_folds)
