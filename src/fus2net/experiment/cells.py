"""A cell's life in the tracking store: created or resumed, then closed by whichever job can.

One cell run per cell key. A job joins the run a previous or parallel job made (re-runs, and
`cv.fold=k` jobs of one cell), trains the folds the store does not have, and then
(`experiment.job.complete_cell`):

- all folds FINISHED: score the cell (pooled out-of-fold, ensemble test) and mark it FINISHED;
- a fold FAILED or KILLED: mark the cell the same, with every fold's reason;
- folds still to be trained by other jobs: park the cell SCHEDULED, then look again, so that
  of two jobs finishing at the same moment at least one sees all folds done and scores it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fus2net.cell.context import JobContext
from fus2net.cell.summary import CellSummary
from fus2net.experiment.interrupts import JobInterrupted
from fus2net.inference.spec import SPEC_FILE
from fus2net.io.files import as_disk_full, locked
from fus2net.tracking import descriptions, provenance, resume, schema
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.tracking.provenance import (
    KEY_ALIAS_TAG,
    SCORED_WITH_TAG,
    evaluation_settings,
    named_overrides,
)

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)

CELL_LOCK = "cell.lock"  # in the cell's folder: held while a job finds or creates its run


@dataclass
class OpenCell:
    """The cell run this job works in, and the run that counts for each fold so far."""

    run_id: str
    folds: dict[int, schema.FoldRun]
    finished: bool  # FINISHED with every fold: nothing left to do
    name: str  # the cell run's name, which its fold runs' names start with
    run: Run | None = None


def cell_name(tags: Mapping[str, str], key: str) -> str:
    """What this cell chose among those its sweep varies (outside a sweep: every override
    that changes results), then the cell key's start: `optimizer=sgd data.channels=1 · 3fa2c1`,
    short in the runs table and distinct in chart legends. Overrides naming a place on disk
    (a dataset's root, a manifest's csv) are left out: a name holds no local path."""
    swept = {schema.tag_key(k) for k in tags.get(schema.SWEPT, "").split()}
    chosen = [o for o in named_overrides(tags) if not swept or o.tag in swept]
    if not chosen:
        return schema.cell_run_name(["default"], key)
    groups = [o.item for o in chosen if o.group]
    return schema.cell_run_name([o.item for o in chosen], key, keep_longest=groups)


def _sweep_tags(run: Run, tags: Mapping[str, str]) -> dict[str, str]:
    """The current sweep becomes the cell's `sweep` (so comparing this sweep finds it); every
    sweep that used the cell stays listed in `fus2net.sweeps`."""
    sweep = tags.get(schema.SWEEP, schema.NO_SWEEP)
    if sweep == schema.NO_SWEEP:
        return {}
    seen = [s for s in schema.CellRun(run).sweeps if s != schema.NO_SWEEP]
    return {schema.SWEEP: sweep, schema.SWEEPS: " ".join(dict.fromkeys([*seen, sweep]))}


def open_cell(ctx: JobContext) -> OpenCell:
    """Find the cell of the job's key (reopened RUNNING unless finished), or create it.

    A reopened cell gets the params it lacks (the job that created it may have died first);
    those it has are kept, since MLflow params cannot change.
    """
    tracker = ctx.tracker
    tags = {
        **ctx.tags,
        schema.ROLE: schema.Role.CELL.value,
        schema.FOLDS_RUN: ",".join(map(str, ctx.folds)),
    }
    params = {**ctx.params, "cv.fold": None}  # the cell is all folds, whichever this job runs
    # Jobs of one cell started at once (`cv.fold=0,1`) find-or-create under the cell's lock, so
    # that they share one run; claim_cell's own check covers jobs on nodes without a shared disk.
    with locked(ctx.cell_dir / CELL_LOCK):
        found = find_cell(ctx)
        key = ctx.key  # an earlier version's, when its cell was found by that
        if not found:
            owned = {**tags, **resume.owner_tags()}
            name = cell_name(ctx.tags, key)
            run_id = resume.claim_cell(tracker, key, name, owned, params)
    if not found:
        tracker.log_datasets(run_id, ctx.cell_image_sets())
        folds = resume.current_fold_runs(tracker, run_id, ctx.stale_after_s)
        return OpenCell(run_id, folds, False, name)
    cell = found[0]
    run_id, name = cell.info.run_id, cell.info.run_name or cell_name(ctx.tags, key)
    folds = resume.current_fold_runs(tracker, run_id, ctx.stale_after_s)
    done = schema.finished_folds(folds)
    if cell.info.status == "FINISHED" and len(done) == ctx.n_folds:
        tracker.set_tags(run_id, _sweep_tags(cell, tags))
        log.info("cell %s is finished in run %s: nothing to train", key, run_id)
        return OpenCell(run_id, folds, True, name, cell)
    log.info(
        "resuming cell %s (run %s, was %s): %d of %d folds finished",
        key,
        run_id,
        cell.info.status,
        len(done),
        ctx.n_folds,
    )
    reopen(tracker, cell, {**_sweep_tags(cell, tags), schema.RESUMED_FROM: cell.info.status})
    logged = cell.data.params
    tracker.log_params(run_id, {k: v for k, v in params.items() if k not in logged})
    tracker.log_datasets(run_id, ctx.cell_image_sets())  # those the job that died had not
    return OpenCell(run_id, folds, False, name, cell)


def find_cell(ctx: JobContext) -> list[Run]:
    """The cell runs of the job's key, else the cell an earlier version keyed otherwise (its
    evaluation-only settings hashed, `provenance.legacy_cell_key`), found by the key that
    version gives this config or by an alias an earlier job set. Such a cell keeps its key: the
    job takes it (and the protocol key of a held-out cell), and the cell is tagged with this
    version's key, so that a job with other evaluation-only settings finds it too."""
    tracker = ctx.tracker
    found = resume.find_cells(tracker, ctx.key)
    if found:
        return found
    found = resume.find_cells(tracker, ctx.key, KEY_ALIAS_TAG)
    if not found and ctx.legacy_key and ctx.legacy_key != ctx.key:
        found = resume.find_cells(tracker, ctx.legacy_key)
        if found:
            tracker.set_tags(found[0].info.run_id, {KEY_ALIAS_TAG: ctx.key})
    if found:
        tags = found[0].data.tags
        kept = tags[schema.CELL_KEY]
        log.info(
            "cell %s is run %s, keyed %s by an earlier version: it keeps that key",
            ctx.key,
            found[0].info.run_id,
            kept,
        )
        ctx.key = ctx.tags[schema.CELL_KEY] = kept
        if schema.LOSO_KEY in ctx.tags and schema.LOSO_KEY in tags:
            ctx.tags[schema.LOSO_KEY] = tags[schema.LOSO_KEY]
    return found


def scored_with(run: Run) -> dict[str, str]:
    """The evaluation-only settings finished cell `run` was last scored with: its
    `fus2net.scored_with` tag, or, scored before that tag existed, its params."""
    recorded = run.data.tags.get(SCORED_WITH_TAG)
    if recorded is None:
        return evaluation_settings(run.data.params)
    try:
        return dict(json.loads(recorded))
    except ValueError:  # cut short (a tag holds 5000 characters): everything is asked again
        return {}


def evaluation_asked(ctx: JobContext, run: Run) -> dict[str, str]:
    """What the job's evaluation-only settings ask of finished cell `run` that it was not
    scored with (a new external set, another Grad-CAM setting...): scored again for them."""
    return provenance.evaluation_asked(evaluation_settings(ctx.params), scored_with(run))


def record_scoring(ctx: JobContext, run_id: str) -> None:
    """Tag the cell run with the evaluation-only settings that scored it, what a re-run compares
    its own with (`evaluation_asked`): its params keep the first ones (MLflow params never
    change), a re-scoring's are read here."""
    settings = json.dumps(evaluation_settings(ctx.params), sort_keys=True)
    ctx.tracker.set_tags(run_id, {SCORED_WITH_TAG: settings})


def reopen(tracker: MlflowTracker, run: Run, tags: Mapping[str, Any]) -> None:
    """Mark `run` RUNNING again, owned by this process, its old error cleared."""
    run_id = run.info.run_id
    attempts = int(run.data.tags.get(schema.ATTEMPTS, "1")) + 1
    tracker.set_status(run_id, "RUNNING")
    tracker.delete_tag(run_id, schema.ERROR)
    tracker.set_tags(run_id, {**tags, **resume.owner_tags(), schema.ATTEMPTS: attempts})


def end_status(exc: BaseException) -> str:
    """KILLED when the job was stopped from outside (a signal, or submitit's requeue exit)."""
    stopped = isinstance(exc, KeyboardInterrupt | JobInterrupted | SystemExit)
    return "KILLED" if stopped else "FAILED"


def store_file(uri: str) -> str | None:
    """The file of a SQLite tracking store (what a full disk there is reported on)."""
    return uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None


# What an exception that carries no message of its own meant, for the run's error tag.
SILENT_EXCEPTIONS = {
    "SIGTERMException": "the process received SIGTERM (scancel, a scheduler's time limit, kill)",
    "KeyboardInterrupt": "interrupted (Ctrl-C or SIGINT)",
}


def error_text(exc: BaseException) -> str:
    """`Type: message` for a run's error tag; an exception without a message (Lightning's
    SIGTERMException, KeyboardInterrupt) says what it means instead of nothing."""
    name = type(exc).__name__
    message = str(exc) or SILENT_EXCEPTIONS.get(name, "no message")
    return f"{name}: {message}"


@contextmanager
def working_in(tracker: MlflowTracker, run_id: str, *, finished: bool = False) -> Iterator[None]:
    """This process works on `run_id` (never reaped as an orphan); when the block raises, the
    run is ended FAILED or KILLED with the reason, and the error goes on (a full disk as
    DiskFull, the path and the space it needed in the run's error too).

    `finished`: the run was FINISHED before the block (a cell scored again): a failure leaves it
    FINISHED, its trained folds and earlier scores standing, with the reason in
    `fus2net.rescore_error`."""
    with resume.working_on(run_id):
        try:
            yield
        except BaseException as exc:
            full = as_disk_full(exc, store=store_file(tracker.uri))
            reason = full or exc
            tag = schema.RESCORE_ERROR if finished else schema.ERROR
            try:
                tracker.set_tags(run_id, {tag: error_text(reason)})
                tracker.end_run(run_id, "FINISHED" if finished else end_status(exc))
            except Exception as store_exc:  # the store itself may be what failed
                if full is None and as_disk_full(store_exc) is None:
                    log.exception("could not mark MLflow run %s as %s", run_id, end_status(exc))
                else:  # the next job marks it KILLED (an orphan): say so, no traceback
                    log.error("could not mark MLflow run %s %s: disk full", run_id, end_status(exc))
            if full is not None and full is not exc:
                raise full from exc
            raise


def all_finished(folds: Mapping[int, schema.FoldRun], n_folds: int) -> bool:
    return len(schema.finished_folds({f: r for f, r in folds.items() if f < n_folds})) == n_folds


def describe_cell(tracker: MlflowTracker, summary: CellSummary) -> str:
    """The scored cell's description (fus2net.tracking.descriptions), from what its run holds
    now: CV and test AUC, the external sets the clinical step scored, model and dataset."""
    run = schema.CellRun(tracker.get_run(summary.cell_run_id))
    metrics = run.metrics
    spec = f"{schema.MODEL_DIR}/{SPEC_FILE}"
    logged = {f.path for f in tracker.list_artifacts(run.run_id, schema.MODEL_DIR)}
    return descriptions.cell_description(
        run.run_id,
        model=run.params.get("model.name", "model"),
        dataset=run.tags.get(schema.DATASET) or run.params.get("dataset.name", "dataset"),
        n_folds=run.n_folds or summary.n_folds,
        test_scoring=run.params.get("cv.test_scoring", "ensemble"),
        cv_auc=(summary.cv.get("auc_mean"), summary.cv.get("auc_std")),
        test_auc=summary.test.get("auc", metrics.get(f"{schema.TEST}/auc")),
        test_ci=summary.test_auc_ci,
        n_test=summary.n_test,
        external=descriptions.external_aucs(metrics),
        predictable=spec in logged,  # what fus2net-predict loads
    )


def close_finished(tracker: MlflowTracker, summary: CellSummary, folds: list[int]) -> None:
    """Mark the scored cell FINISHED, with the folds it was scored from and its description."""
    run_id = summary.cell_run_id
    tags = {
        schema.FOLDS_RUN: ",".join(map(str, folds)),
        schema.DESCRIPTION: describe_cell(tracker, summary),
    }
    tracker.set_tags(run_id, tags)
    tracker.delete_tag(run_id, schema.ERROR)
    tracker.end_run(run_id, "FINISHED")
    summary.status, summary.error = "FINISHED", ""


def close_unfinished(
    tracker: MlflowTracker,
    summary: CellSummary,
    folds: Mapping[int, schema.FoldRun],
    n_folds: int,
) -> None:
    """A cell some of whose folds failed or were killed ends the same; one whose folds other
    jobs still train is parked SCHEDULED."""
    run_id = summary.cell_run_id
    broken = {f: r for f, r in folds.items() if r.status in ("FAILED", "KILLED")}
    if broken:
        failed = any(r.status == "FAILED" for r in broken.values())
        summary.status = "FAILED" if failed else "KILLED"
        summary.error = "; ".join(
            f"{schema.fold_label(f, n_folds)} {r.status}: {r.error or 'no reason logged'}"
            for f, r in broken.items()
        )
        tracker.set_tags(run_id, {schema.ERROR: summary.error})
        tracker.end_run(run_id, summary.status)
    else:
        missing = [f for f in range(n_folds) if f not in schema.finished_folds(folds)]
        summary.status = "SCHEDULED"
        labels = ", ".join(f"{schema.fold_label(f, n_folds)} (cv.fold={f})" for f in missing)
        summary.error = f"{labels} not finished yet (other cv.fold jobs)"
        tracker.set_status(run_id, "SCHEDULED")
    log.info("cell %s: %s (%s)", summary.cell_key, summary.status, summary.error)
