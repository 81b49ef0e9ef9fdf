"""Reading a sweep back from MLflow: its cells, their folds and predictions, and what is missing.

Everything comes from one paged search of the experiment (cell and fold runs share the sweep
tag), plus one for cells an explicitly named sweep shares with a later one, the folds of any
finished cell a `--filter` left them out of, and one `predictions.csv` per cell, so hundreds of
runs read in seconds. Cells that
failed, were killed, are still running, ran only some folds or were re-run are not dropped
silently: they come back as `Skipped` with the reason, for the report to list.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fus2net.evaluation.metrics import METRICS
from fus2net.tracking.mlflow_tracker import PARENT_TAG, MlflowTracker

ROLE_TAG = "fus2net.role"
CELLS = f"tags.`{ROLE_TAG}` = 'cell'"
SWEEPS_TAG = "fus2net.sweeps"  # every sweep that used a cell (a later sweep may reuse it)
REQUIRED_COLUMNS = ("path", "label", "prob", "split")


@dataclass(frozen=True)
class CellRun:
    """One cell (configuration) of a sweep, as logged by `fus2net-train`."""

    run: Any  # the mlflow Run, kept for artifact access
    folds: dict[int, dict[str, float]] = field(default_factory=dict)  # fold -> validation metrics

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def name(self) -> str:
        return self.run.info.run_name or self.run_id

    @property
    def status(self) -> str:
        return self.run.info.status

    @property
    def params(self) -> dict[str, str]:
        return self.run.data.params

    @property
    def tags(self) -> dict[str, str]:
        return self.run.data.tags

    @property
    def metrics(self) -> dict[str, float]:
        return self.run.data.metrics

    @property
    def n_folds(self) -> int:
        return int(self.params.get("cv.folds", 0) or 0)

    @property
    def folds_run(self) -> list[int]:
        return [int(f) for f in self.tags.get("fus2net.folds_run", "").split(",") if f]


@dataclass(frozen=True)
class Skipped:
    """A cell left out of the comparison, and why."""

    run_id: str
    name: str
    status: str
    reason: str


@dataclass
class SweepRuns:
    cells: list[CellRun]  # complete, finished cells in the order they were started
    skipped: list[Skipped]
    query: str  # the MLflow filter that selected them
    sweeps: list[str]  # the sweep tag(s) they carry


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def latest_sweep(tracker: MlflowTracker) -> str | None:
    """The sweep tag of the most recently started cell in the experiment."""
    newest = tracker.search_all_runs(CELLS, order_by=["attributes.start_time DESC"], max_results=1)
    return newest[0].data.tags.get("sweep") if newest else None


def build_query(sweep: str | None, filter_string: str, tag: str = "sweep") -> str:
    """`--sweep` (a sweep tag or its end, e.g. the time folder) AND-ed with a user filter.

    `tag="fus2net.sweeps"` matches the list of every sweep that reused a cell.
    """
    parts = []
    if sweep and sweep != "all":
        pattern = "%" + sweep + ("%" if tag != "sweep" else "")
        parts.append(f"tags.`{tag}` LIKE {_quote(pattern)}")
    if filter_string.strip():
        parts.append(filter_string.strip())
    return " AND ".join(parts)


def _sweeps_of(run: Any) -> list[str]:
    tags = run.data.tags
    return list(dict.fromkeys([*tags.get(SWEEPS_TAG, "").split(), tags.get("sweep", "none")]))


def _fold_metrics(run: Any) -> dict[str, float]:
    return {
        m: run.data.metrics[f"fold/val_{m}"] for m in METRICS if f"fold/val_{m}" in run.data.metrics
    }


def _why_unusable(cell: CellRun) -> tuple[str, str] | None:
    """(status, reason) when a cell cannot be compared, None when it can."""
    error = cell.tags.get("fus2net.error", "")
    if cell.status in ("FAILED", "KILLED"):
        return cell.status, f"{cell.status.lower()}: {error or 'no error recorded'}"
    if cell.status == "SCHEDULED":
        missing = [f for f in range(cell.n_folds) if f not in cell.folds]
        return cell.status, f"waiting for fold(s) {missing} (other cv.fold jobs)"
    if cell.status != "FINISHED":
        done = len(cell.folds)
        return cell.status, (
            f"unfinished ({cell.status.lower()}; {done} of {cell.n_folds} folds done): still "
            "running, or its process died before it could mark the run"
        )
    if cell.n_folds and sorted(cell.folds_run) != list(range(cell.n_folds)):
        return "PARTIAL", (
            f"ran fold(s) {cell.folds_run} of {cell.n_folds} (cv.fold): a single-fold job has no "
            "pooled out-of-fold or ensemble test predictions to compare"
        )
    return None


def read_sweep(
    tracker: MlflowTracker, sweep: str | None = None, filter_string: str = ""
) -> SweepRuns:
    """The cells of one sweep (default: the latest), or of an MLflow filter, with their folds."""
    latest = not sweep and not filter_string.strip()
    if latest:
        sweep = latest_sweep(tracker)
        if sweep is None:
            raise ValueError(
                f"experiment {tracker.experiment_name!r} has no cell runs yet: run fus2net-train "
                "first, or choose another experiment with --experiment"
            )
    query = build_query(sweep, filter_string)
    runs = tracker.search_all_runs(query)
    if sweep and sweep != "all" and not latest:  # cells a later sweep reused carry its tag now
        seen = {r.info.run_id for r in runs}
        reused = tracker.search_all_runs(build_query(sweep, filter_string, SWEEPS_TAG))
        runs += [
            r
            for r in reused
            if r.info.run_id not in seen and any(s.endswith(sweep) for s in _sweeps_of(r))
        ]
    cell_runs = [r for r in runs if r.data.tags.get(ROLE_TAG) == "cell"]
    fold_runs = [r for r in runs if r.data.tags.get(ROLE_TAG) == "fold"]
    if not cell_runs:
        raise ValueError(f"no cell runs match {query!r} in experiment {tracker.experiment_name!r}")
    parents = {r.data.tags.get(PARENT_TAG) for r in fold_runs}
    for cell in cell_runs:  # a finished cell whose folds the filter left out
        if cell.info.status == "FINISHED" and cell.info.run_id not in parents:
            children = tracker.child_runs(cell.info.run_id)
            fold_runs += [r for r in children if r.data.tags.get(ROLE_TAG) == "fold"]
    if sweep and sweep != "all":
        sweeps = sorted({s for r in cell_runs for s in _sweeps_of(r) if s.endswith(sweep)})
        if len(sweeps) > 1:
            raise ValueError(
                f"--sweep {sweep!r} matches {len(sweeps)} sweeps: {', '.join(sweeps)}; "
                "give more of it"
            )
    else:
        sweeps = sorted({r.data.tags.get("sweep", "none") for r in cell_runs})

    folds: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    for run in sorted(fold_runs, key=lambda r: r.info.start_time or 0):
        if run.info.status == "FINISHED" and "fus2net.fold" in run.data.tags:
            folds[run.data.tags.get(PARENT_TAG, "")][int(run.data.tags["fus2net.fold"])] = (
                _fold_metrics(run)
            )
    cells = [
        CellRun(run, dict(sorted(folds[run.info.run_id].items())))
        for run in sorted(cell_runs, key=lambda r: r.info.start_time or 0)
    ]

    usable: dict[str, CellRun] = {}  # cell key -> newest complete run
    skipped: list[Skipped] = []
    for cell in cells:
        problem = _why_unusable(cell)
        if problem:
            skipped.append(Skipped(cell.run_id, cell.name, *problem))
            continue
        key = cell.tags.get("fus2net.cell_key", cell.run_id)
        if key in usable:
            old = usable[key]
            skipped.append(
                Skipped(old.run_id, old.name, "SUPERSEDED", f"same cell re-run as {cell.run_id}")
            )
        usable[key] = cell
    kept = sorted(usable.values(), key=lambda c: c.run.info.start_time or 0)
    return SweepRuns(kept, skipped, query, sweeps)


def load_predictions(tracker: MlflowTracker, cell: CellRun, download_dir: Path) -> pd.DataFrame:
    """The cell's `predictions.csv` (pooled out-of-fold and test rows), checked."""
    path = tracker.artifact_file(cell.run, "predictions.csv", download_dir / cell.run_id)
    frame = pd.read_csv(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path} (run {cell.run_id}) lacks column(s) {missing}; expected "
            f"{list(REQUIRED_COLUMNS)}: was it written by fus2net-train?"
        )
    splits = set(frame["split"])
    if not {"oof", "test"} <= splits:
        raise ValueError(
            f"{path} (run {cell.run_id}) has splits {sorted(splits)}; a cell's predictions need "
            "both 'oof' and 'test' rows"
        )
    return frame
