"""What a cell already has in the tracking store, so that a re-run does only what is missing.

A cell run is found by its `fus2net.cell_key` tag, its folds as its child runs by `fus2net.fold`.
A run whose process died without ending it (SIGKILL, the OOM killer, a lost node) would stay
RUNNING forever; every run therefore carries owner tags (host, pid, the process's start time),
a fold run also a heartbeat (`tracking.lightning_logger.Heartbeat`), and `is_orphan` tells a
live fold run from a dead one:

- same host: the owner process is gone, or its pid now belongs to another process;
- other host: no heartbeat for `stale_after_s` seconds (a heartbeat is written at most once a
  minute while training).

`reap_orphans` marks such fold runs KILLED with the reason, before the fold is redone.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fus2net.tracking import schema
from fus2net.tracking.mlflow_tracker import MlflowTracker

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)

STALE_AFTER_S = 900.0  # 15 missed heartbeats: only for runs owned by another host

# Runs this process is working on right now: never orphans, whatever their tags say.
_ACTIVE: set[str] = set()


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), to tell a reused pid apart."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - one short read
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces, so count from its closing ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, start: str | None) -> bool:
    """Whether process `pid` (started at `start`, when known) still exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    now = process_start_time(pid)
    return not (start and now and now != start)


def owner_tags() -> dict[str, str]:
    """Who is running a run: host, pid, process start time, and a first heartbeat."""
    pid = os.getpid()
    return {
        schema.HOST: socket.gethostname(),
        schema.PID: str(pid),
        schema.PID_START: process_start_time(pid) or "",
        schema.HEARTBEAT: str(int(time.time())),
    }


def is_orphan(run: Run, stale_after_s: float = STALE_AFTER_S, now: float | None = None) -> bool:
    """True for a RUNNING run whose owner process is gone (see the module docstring)."""
    if run.info.status != "RUNNING" or run.info.run_id in _ACTIVE:
        return False
    tags = run.data.tags
    pid = tags.get(schema.PID, "")
    if tags.get(schema.HOST) == socket.gethostname() and pid.isdigit():
        if int(pid) == os.getpid():  # this process, but no longer working on it
            return True
        return not process_alive(int(pid), tags.get(schema.PID_START) or None)
    beat = tags.get(schema.HEARTBEAT, "")
    last = float(beat) if beat.isdigit() else (run.info.start_time or 0) / 1000
    return (now or time.time()) - last > stale_after_s


def reap_orphans(
    tracker: MlflowTracker, runs: Iterable[Run], stale_after_s: float = STALE_AFTER_S
) -> list[str]:
    """Mark every orphaned run of `runs` KILLED with the reason; returns their ids."""
    reaped = []
    for run in runs:
        if not is_orphan(run, stale_after_s):
            continue
        tags = run.data.tags
        owner = f"process {tags.get(schema.PID, '?')} on {tags.get(schema.HOST, '?')}"
        reason = (
            f"orphaned: {owner} ended without closing the run (SIGKILL, out of memory or a lost "
            f"node); marked KILLED by process {os.getpid()} on {socket.gethostname()}"
        )
        tracker.set_tags(run.info.run_id, {schema.ERROR: reason})
        tracker.end_run(run.info.run_id, "KILLED")
        log.warning("run %s (%s): %s", run.info.run_id, run.info.run_name, reason)
        reaped.append(run.info.run_id)
    return reaped


@contextmanager
def working_on(run_id: str) -> Iterator[None]:
    """Declare that this process works on `run_id` (so `is_orphan` never reaps it here)."""
    _ACTIVE.add(run_id)
    try:
        yield
    finally:
        _ACTIVE.discard(run_id)


def find_cells(tracker: MlflowTracker, key: str, tag: str = schema.CELL_KEY) -> list[Run]:
    """The cell runs of `key` (their `tag`) in the experiment, oldest first (normally one)."""
    query = schema.role_filter(schema.Role.CELL, **{tag: key})
    return schema.oldest_first(tracker.search_runs(query))


def claim_cell(
    tracker: MlflowTracker,
    key: str,
    name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any],
) -> str:
    """The cell run of `key`: a new one (with `params`), unless another job created one first.

    Parallel jobs of one cell (`cv.fold=0,1,...`) may each create a run at the same moment; all
    of them then keep the oldest, and the others are deleted, so a cell has one run. Params are
    logged before the others can see the run, so that no joining job ever logs them (MLflow
    refuses a param logged twice with different values).
    """
    mine = tracker.start_run(name, tags)
    tracker.log_params(mine, params)
    cells = find_cells(tracker, key)
    winner = cells[0].info.run_id if cells else mine
    if winner != mine:
        tracker.delete_run(mine)
        log.info("cell %s was created by another job at the same time: joining run %s", key, winner)
    return winner


def fold_runs(tracker: MlflowTracker, cell_run_id: str) -> dict[int, schema.FoldRun]:
    """The run that counts for each fold of a cell, as the store has it now."""
    return schema.fold_runs_of(cell_run_id, tracker.child_runs(cell_run_id))


def current_fold_runs(
    tracker: MlflowTracker, cell_run_id: str, stale_after_s: float = STALE_AFTER_S
) -> dict[int, schema.FoldRun]:
    """`fold_runs` after marking orphans among them KILLED (re-read: statuses are current)."""
    runs = fold_runs(tracker, cell_run_id)
    if reap_orphans(tracker, [r.run for r in runs.values()], stale_after_s):
        runs = fold_runs(tracker, cell_run_id)
    return runs
