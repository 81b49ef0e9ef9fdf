"""Reading a sweep back from MLflow: its cells, their folds and predictions, and what is missing.

Everything comes from one paged search of the experiment (cell and fold runs share the sweep
tag), plus one for cells an explicitly named sweep shares with a later one, the folds of any
finished cell a `--filter` left them out of, and one `predictions.csv` per cell, so hundreds of
runs read in seconds. Cells that
failed, were killed, are still running, ran only some folds, lost fold runs (deleted from the
store) or were re-run are not dropped
silently: they come back as `Skipped` with the reason, for the report to list; so does a cell
whose runs or files cannot be read back (odd params, missing predictions), never failing the
comparison of the others.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from fus2net.tracking import schema
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.tracking.predictions import read_cell_predictions
from fus2net.tracking.schema import CellRun

if TYPE_CHECKING:
    from mlflow.entities import Run

CELLS = schema.role_filter(schema.Role.CELL)


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
    return newest[0].data.tags.get(schema.SWEEP) if newest else None


def build_query(sweep: str | None, filter_string: str, tag: str = schema.SWEEP) -> str:
    """`--sweep` (a sweep tag or its end, e.g. the time folder) AND-ed with a user filter.

    `tag=schema.SWEEPS` matches the list of every sweep that reused a cell.
    """
    parts = []
    if sweep and sweep != "all":
        pattern = "%" + sweep + ("%" if tag != schema.SWEEP else "")
        parts.append(f"tags.`{tag}` LIKE {_quote(pattern)}")
    if filter_string.strip():
        parts.append(filter_string.strip())
    return " AND ".join(parts)


UNREADABLE = "UNREADABLE"  # the status of a cell whose run cannot be read back
INCOMPLETE = "INCOMPLETE"  # finished, but fold runs it ran are gone from the store


def _odd_records(cell: CellRun) -> str | None:
    """What in a cell's params or tags cannot be read as fus2net-train writes it: a cell
    logged before its config was validated (`cv.folds=2.5`), or edited by hand."""
    folds = cell.params.get("cv.folds")
    if folds is not None and not str(folds).isdigit():
        return f"its cv.folds param is {folds!r}, not a whole number of folds"
    folds_run = cell.tags.get(schema.FOLDS_RUN, "")
    if any(not part.isdigit() for part in folds_run.split(",") if part):
        return f"its {schema.FOLDS_RUN} tag is {folds_run!r}, not a list of fold numbers"
    return None


def unreadable_cell(cell: CellRun, err: BaseException) -> Skipped:
    """A cell whose runs or files could not be read, and the error that says why."""
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return Skipped(cell.run_id, cell.name, UNREADABLE, f"cannot be read back: {reason}")


def _why_unusable(cell: CellRun) -> tuple[str, str] | None:
    """(status, reason) when a cell cannot be compared, None when it can."""
    error = cell.error
    if cell.status in ("FAILED", "KILLED"):
        return cell.status, f"{cell.status.lower()}: {error or 'no error recorded'}"
    odd = _odd_records(cell)
    if odd:
        return UNREADABLE, odd
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
    ran = cell.folds_run or list(range(cell.n_folds))
    gone = [f for f in ran if f not in cell.folds]
    if gone:  # deleted or unfinished fold runs: a spread over the rest is not its CV
        return INCOMPLETE, (
            f"fold run(s) {gone} of the {len(ran)} it ran are not in the store as finished runs "
            f"(deleted, or never finished); only {len(ran) - len(gone)} remain, and its "
            "cross-validation is not computed over fewer folds than it ran"
        )
    return None


def _folds_of(run: Run) -> int:
    """How many fold runs the cell has: its `folds_run` tag, else cv.folds (0 where neither
    reads as a number: `_odd_records` reports those)."""
    cell = CellRun(run)
    try:
        return len(cell.folds_run) or cell.n_folds
    except ValueError:
        return 0


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
        reused = tracker.search_all_runs(build_query(sweep, filter_string, schema.SWEEPS))
        runs += [
            r
            for r in reused
            if r.info.run_id not in seen and any(s.endswith(sweep) for s in CellRun(r).sweeps)
        ]
    cell_runs = [r for r in runs if schema.is_role(r, schema.Role.CELL)]
    fold_runs = [r for r in runs if schema.is_role(r, schema.Role.FOLD)]
    if not cell_runs:
        raise ValueError(f"no cell runs match {query!r} in experiment {tracker.experiment_name!r}")
    found: dict[str, set[str]] = defaultdict(set)  # cell run -> fold indices the query found
    for run in fold_runs:
        found[run.data.tags.get(schema.PARENT, "")].add(run.data.tags.get(schema.FOLD, ""))
    for cell in cell_runs:  # a finished cell some of whose folds the query left out
        if cell.info.status == "FINISHED" and len(found[cell.info.run_id]) < _folds_of(cell):
            # a --filter on cell params, or folds trained in an earlier sweep the cell resumed
            known = {r.info.run_id for r in fold_runs}
            children = tracker.child_runs(cell.info.run_id)
            fold_runs += [
                r
                for r in children
                if schema.is_role(r, schema.Role.FOLD) and r.info.run_id not in known
            ]
    if sweep and sweep != "all":
        sweeps = sorted({s for r in cell_runs for s in CellRun(r).sweeps if s.endswith(sweep)})
        if len(sweeps) > 1:
            raise ValueError(
                f"--sweep {sweep!r} matches {len(sweeps)} sweeps: {', '.join(sweeps)}; "
                "give more of it"
            )
    else:
        sweeps = sorted({r.data.tags.get(schema.SWEEP, schema.NO_SWEEP) for r in cell_runs})

    by_cell: dict[str, list[Run]] = defaultdict(list)
    for run in fold_runs:
        by_cell[run.data.tags.get(schema.PARENT, "")].append(run)
    cells = []
    skipped: list[Skipped] = []
    for run in schema.oldest_first(cell_runs):  # one odd run never stops the others
        try:
            folds = schema.finished_folds(
                schema.fold_runs_of(run.info.run_id, by_cell[run.info.run_id])
            )
            cells.append(CellRun(run, {f: r.metrics(schema.Split.VAL) for f, r in folds.items()}))
        except Exception as err:  # e.g. a fold tag that is not a number
            skipped.append(unreadable_cell(CellRun(run), err))

    usable: dict[str, CellRun] = {}  # cell key -> newest complete run
    for cell in cells:
        try:
            problem = _why_unusable(cell)
        except Exception as err:
            skipped.append(unreadable_cell(cell, err))
            continue
        if problem:
            skipped.append(Skipped(cell.run_id, cell.name, *problem))
            continue
        key = cell.key
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
    path = tracker.artifact_file(cell.run, schema.PREDICTIONS_FILE, download_dir / cell.run_id)
    return read_cell_predictions(path, cell.run_id)
