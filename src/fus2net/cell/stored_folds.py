"""A finished fold read back from the tracking store, so a cell can be completed by a later job.

When folds run in separate jobs (`cv.fold=k`, in parallel or on other machines) or a sweep is
re-run after a crash, the cell's ensemble and pooled out-of-fold scores need the predictions of
folds this process did not train. Each fold run logged them in `predictions.csv`; rows are
matched back to records by path, or by the path relative to the dataset folder when the data is
mounted elsewhere on this machine.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fus2net.cell.context import JobContext
from fus2net.cell.summary import FoldMetrics
from fus2net.data.records import Record
from fus2net.data.splits import record_keys
from fus2net.evaluation.metrics import split_metrics
from fus2net.io.files import written_whole
from fus2net.tracking import schema
from fus2net.training.fold import FoldResult

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)


class RecordIndex:
    """Record index of a logged image path: exact, else the longest matching relative key."""

    def __init__(self, records: Sequence[Record]) -> None:
        self.by_path = {str(r.image): i for i, r in enumerate(records)}
        self.by_key = {key: i for i, key in enumerate(record_keys(records))}

    def __call__(self, path: str) -> int:
        if path in self.by_path:
            return self.by_path[path]
        parts = Path(path).parts
        for start in range(len(parts)):
            found = self.by_key.get("/".join(parts[start:]))
            if found is not None:
                return found
        raise ValueError(
            f"{path}: a stored prediction matches no image of this dataset (the cell key says the "
            "data is the same, so the file list must be): was the dataset changed in place?"
        )


def load_fold_result(ctx: JobContext, run: Run) -> tuple[FoldResult, FoldMetrics]:
    """The FoldResult and metrics of a FINISHED fold run, from its logged artifacts.

    Its weights (`checkpoint/model.pt`) are fetched into `fold_<k>/model.pt`, where a fold
    trained by this job would have left them.
    """
    tracker, run_id = ctx.tracker, run.info.run_id
    fold_dir = ctx.fold_dir(schema.FoldRun(run).fold)
    stored = fold_dir / "stored"
    preds = pd.read_csv(tracker.artifact_file(run, schema.PREDICTIONS_FILE, stored))
    index = RecordIndex(ctx.data.records)
    val = preds[preds["split"] == schema.Split.VAL]
    test = preds[preds["split"] == schema.Split.TEST]
    test_prob = dict(zip(test["path"].map(index), test["prob"], strict=True))
    weights = fold_dir / "model.pt"
    logged = {a.path for a in tracker.list_artifacts(run_id)}
    if schema.CHECKPOINT_DIR in logged:
        _fetch(ctx, run_id, schema.FOLD_WEIGHTS, weights, stored)
    elif not weights.is_file():
        log.warning("fold run %s logged no %s (log_checkpoints=false)", run_id, schema.FOLD_WEIGHTS)
    result = FoldResult(
        val_index=val["path"].map(index).to_numpy(dtype=np.int64),
        val_prob=val["prob"].to_numpy(dtype=float),
        test_prob=np.array([test_prob[int(i)] for i in ctx.data.split.test], dtype=float),
        weights=weights,
        epochs_run=int(run.data.params.get("trainer.max_epochs", 0) or 0),
    )
    return result, split_metrics(preds)


def _fetch(ctx: JobContext, run_id: str, path: str, weights: Path, stored: Path) -> None:
    """Artifact `path` of run `run_id` copied whole to `weights` (unless it is there)."""
    if weights.is_file():
        return
    fetched = ctx.tracker.download_artifacts(run_id, path, stored)
    with written_whole(weights, Path(fetched).stat().st_size) as tmp:
        shutil.copyfile(fetched, tmp)


def load_refit_result(ctx: JobContext, cell_run: Run) -> FoldResult | None:
    """The refit model (`cv.test_scoring=refit`) cell run `cell_run` already holds: its weights,
    fetched into `refit/model.pt` where `_refit` leaves them, and its test probabilities from
    the cell's predictions; None when the run holds none (trained before, or
    `tracking.log_checkpoints=false`). The cell key says it is the model this job would fit."""
    tracker, run_id = ctx.tracker, cell_run.info.run_id
    if schema.REFIT_WEIGHTS not in {
        a.path for a in tracker.list_artifacts(run_id, schema.REFIT_DIR)
    }:
        return None
    stored = ctx.out / "refit" / "stored"
    preds = pd.read_csv(tracker.artifact_file(cell_run, schema.PREDICTIONS_FILE, stored))
    test = preds[preds["split"] == schema.Split.TEST]
    test_prob = dict(
        zip(test["path"].map(RecordIndex(ctx.data.records)), test["prob"], strict=True)
    )
    weights = ctx.out / "refit" / "model.pt"
    _fetch(ctx, run_id, schema.REFIT_WEIGHTS, weights, stored)
    log.info("refit model read back from cell run %s, not fitted again", run_id)
    return FoldResult(
        val_index=np.zeros(0, dtype=np.int64),
        val_prob=np.zeros(0, dtype=float),
        test_prob=np.array([test_prob[int(i)] for i in ctx.data.split.test], dtype=float),
        weights=weights,
        epochs_run=int(cell_run.data.params.get("trainer.max_epochs", 0) or 0),
    )


def missing_models(ctx: JobContext, cell_run: Run, folds: dict[int, schema.FoldRun]) -> list[str]:
    """The models of a finished cell the store lacks (`tracking.log_checkpoints=false`): the
    runs whose weights scoring it again would need, none when it can be scored from the store."""
    tracker = ctx.tracker
    if str(ctx.cfg.cv.test_scoring) == "refit":
        runs = {"the cell run": (cell_run.info.run_id, schema.REFIT_DIR, schema.REFIT_WEIGHTS)}
    else:
        runs = {
            ctx.fold_name(f): (r.run_id, schema.CHECKPOINT_DIR, schema.FOLD_WEIGHTS)
            for f, r in sorted(folds.items())
        }
    return [
        f"{name} ({run_id})"
        for name, (run_id, folder, path) in runs.items()
        if path not in {a.path for a in tracker.list_artifacts(run_id, folder)}
    ]
