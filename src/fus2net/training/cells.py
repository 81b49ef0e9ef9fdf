"""A cell's life in the tracking store: created or resumed, then finished by whichever job can.

One cell run per cell key. A job joins the run a previous or parallel job made (re-runs, and
`cv.fold=k` jobs of one cell), trains the folds the store does not have, and then:

- all folds FINISHED: score the cell (pooled out-of-fold, ensemble test) and mark it FINISHED;
- a fold FAILED or KILLED: mark the cell the same, with every fold's reason;
- folds still to be trained by other jobs: park the cell SCHEDULED, then look again, so that
  of two jobs finishing at the same moment at least one sees all folds done and scores it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from fus2net.evaluation.metrics import METRICS
from fus2net.tracking import resume
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.tracking.provenance import NON_RESULT_KEYS
from fus2net.training.fold import FoldResult

if TYPE_CHECKING:
    from fus2net.training.crossval import CellSummary

log = logging.getLogger(__name__)

FoldMetrics = dict[str, dict[str, float]]


@dataclass
class OpenCell:
    """The cell run this job works in, and the run that counts for each fold so far."""

    run_id: str
    folds: dict[int, Any]
    finished: bool  # FINISHED with every fold: nothing left to do
    run: Any = None


def _sweep_tags(run: Any, tags: Mapping[str, str]) -> dict[str, str]:
    """The current sweep becomes the cell's `sweep` (so comparing this sweep finds it); every
    sweep that used the cell stays listed in `fus2net.sweeps`."""
    sweep = tags.get("sweep", "none")
    if sweep == "none":
        return {}
    seen = run.data.tags.get("fus2net.sweeps", run.data.tags.get("sweep", "")).split()
    return {"sweep": sweep, "fus2net.sweeps": " ".join(dict.fromkeys([*seen, sweep]))}


def checkpoint_dir(cfg: DictConfig, key: str, fold: int) -> Path:
    """Where fold `fold` of cell `key` keeps last.ckpt: the same for every re-run of the cell
    (per experiment: the same cell may be tracked in two at once)."""
    experiment = re.sub(r"[^\w.-]", "_", str(cfg.tracking.experiment))
    return (
        Path(cfg.paths.root)
        / "outputs"
        / "cells"
        / experiment
        / key
        / f"fold_{fold}"
        / "checkpoints"
    )


def cell_name(tags: dict[str, str]) -> str:
    """The overrides that change results, e.g. `optimizer=sgd data.channels=1`; MLflow stores
    at most 250 characters of a run name (PostgreSQL enforces it)."""
    changed = []
    for tag, value in tags.items():
        key = tag.removeprefix("override.")
        if key != tag and not any(key == p or key.startswith(p + ".") for p in NON_RESULT_KEYS):
            changed.append(f"{key}={value}")
    name = " ".join(changed) or "default"
    return name if len(name) <= 250 else name[:249] + "…"


def open_cell(
    tracker: MlflowTracker,
    key: str,
    name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any],
    n_folds: int,
    stale_after_s: float,
) -> OpenCell:
    """Find the cell of `key` (reopened RUNNING unless finished), or create it with `params`.

    A reopened cell gets the params it lacks (the job that created it may have died first);
    those it has are kept, since MLflow params cannot change.
    """
    found = resume.find_cells(tracker, key)
    if not found:
        run_id = resume.claim_cell(tracker, key, name, {**tags, **resume.owner_tags()}, params)
        return OpenCell(run_id, resume.current_fold_runs(tracker, run_id, stale_after_s), False)
    cell = found[0]
    run_id = cell.info.run_id
    folds = resume.current_fold_runs(tracker, run_id, stale_after_s)
    done = [f for f, r in folds.items() if r.info.status == "FINISHED"]
    if cell.info.status == "FINISHED" and len(done) == n_folds:
        tracker.set_tags(run_id, _sweep_tags(cell, tags))
        log.info("cell %s is finished in run %s: nothing to train", key, run_id)
        return OpenCell(run_id, folds, True, cell)
    log.info(
        "resuming cell %s (run %s, was %s): %d of %d folds finished",
        key,
        run_id,
        cell.info.status,
        len(done),
        n_folds,
    )
    reopen(tracker, cell, {**_sweep_tags(cell, tags), "fus2net.resumed_from": cell.info.status})
    logged = cell.data.params
    tracker.log_params(run_id, {k: v for k, v in params.items() if k not in logged})
    return OpenCell(run_id, folds, False, cell)


def reopen(tracker: MlflowTracker, run: Any, tags: Mapping[str, str]) -> None:
    """Mark `run` RUNNING again, owned by this process, its old error cleared."""
    run_id = run.info.run_id
    attempts = int(run.data.tags.get("fus2net.attempts", "1")) + 1
    tracker.set_status(run_id, "RUNNING")
    tracker.delete_tag(run_id, resume.ERROR_TAG)
    tracker.set_tags(run_id, {**tags, **resume.owner_tags(), "fus2net.attempts": attempts})


def stored_summary(cell: OpenCell, summary: CellSummary) -> None:
    """Fill `summary` from a finished cell's logged metrics (nothing was trained)."""
    for fold, run in cell.folds.items():
        logged = run.data.metrics
        summary.folds[fold] = {
            sp: {m: logged[f"fold/{sp}_{m}"] for m in METRICS if f"fold/{sp}_{m}" in logged}
            for sp in ("val", "test")
        }
    for name, value in cell.run.data.metrics.items():
        prefix, _, metric = name.partition("/")
        if prefix == "cv" and metric != "folds_completed":
            summary.cv[metric] = value
        elif prefix == "test":
            summary.test[metric] = value


def finish_cell(
    tracker: MlflowTracker,
    summary: CellSummary,
    n_folds: int,
    results: dict[int, FoldResult],
    load: Callable[[int, Any], tuple[FoldResult, FoldMetrics]],
    score: Callable[[dict[int, FoldResult]], None],
    stale_after_s: float,
) -> None:
    """Score and close the cell if every fold is done, else record why not (module docstring).

    `load(fold, run)` reads a fold another job trained; `score(results)` logs the cell's
    metrics and artifacts from all folds' results.
    """
    run_id = summary.cell_run_id
    for look in range(2):
        folds = resume.current_fold_runs(tracker, run_id, stale_after_s)
        done = [f for f in range(n_folds) if f in folds and folds[f].info.status == "FINISHED"]
        if len(done) == n_folds:
            for fold in done:
                if fold not in results:
                    results[fold], summary.folds[fold] = load(fold, folds[fold])
            summary.folds = dict(sorted(summary.folds.items()))
            tracker.set_tags(run_id, {"fus2net.folds_run": ",".join(map(str, done))})
            score(dict(sorted(results.items())))
            tracker.delete_tag(run_id, resume.ERROR_TAG)
            tracker.end_run(run_id, "FINISHED")
            summary.status, summary.error = "FINISHED", ""
            return
        if look:
            return
        broken = {f: r for f, r in folds.items() if r.info.status in ("FAILED", "KILLED")}
        if broken:
            summary.status = (
                "FAILED" if any(r.info.status == "FAILED" for r in broken.values()) else "KILLED"
            )
            summary.error = "; ".join(
                f"fold {f} {r.info.status}: {r.data.tags.get(resume.ERROR_TAG, 'no reason logged')}"
                for f, r in broken.items()
            )
            tracker.set_tags(run_id, {resume.ERROR_TAG: summary.error[:5000]})
            tracker.end_run(run_id, summary.status)
        else:
            missing = [f for f in range(n_folds) if f not in done]
            summary.status = "SCHEDULED"
            summary.error = f"fold(s) {missing} not finished yet (other cv.fold jobs)"
            tracker.set_status(run_id, "SCHEDULED")
        log.info("cell %s: %s (%s)", summary.cell_key, summary.status, summary.error)
