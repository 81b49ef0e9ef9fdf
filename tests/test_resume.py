"""Kill and resume with real processes and real signals: SIGTERM, SIGKILL and SIGINT mid-epoch.

One cell (2 folds x 5 epochs at tiny settings) is started four times with the same command. Each
run but the last is stopped as soon as a fold ended an epoch in it, so it is inside the next
epoch: no run may be left RUNNING (after SIGKILL the next run marks it KILLED), each fold resumes
from its last checkpoint, and the last run finishes the cell with one run per fold.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fus2net.cell.summary import CellSummary
from fus2net.experiment import job
from fus2net.tracking import resume, schema
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.training.fold import _loadable
from jobs import sqlite_client, start_train, tiny

TINY = tiny(
    "dataset.n_images=48",
    "data.image_size=96",
    "trainer.max_epochs=5",  # always a next epoch to be stopped in, even on a fast machine
    "evaluation.enabled=false",
)


def start(root: Path) -> subprocess.Popen:
    log = (root / f"run{len(list(root.glob('run*.log')))}.log").open("w")
    return start_train(TINY, root, stdout=log)


def checkpoint(root: Path, fold: int) -> Path | None:
    found = list((root / "outputs" / "cells").glob(f"fus2net/*/fold_{fold}/checkpoints/last.ckpt"))
    return found[0] if found else None


def epochs_logged(root: Path, fold: int) -> int:
    """How many epoch losses fold `fold`'s newest run has logged (0 before it exists)."""
    if checkpoint(root, fold) is None:  # the store may not exist yet: never create it from here
        return 0
    client = sqlite_client(root)
    _, folds = runs(root)
    mine = [f for f in folds if f.data.tags["fus2net.fold"] == str(fold)]
    return len(client.get_metric_history(mine[-1].info.run_id, "loss/train")) if mine else 0


def stop_in_next_epoch(proc: subprocess.Popen, root: Path, fold: int, sig: int) -> int:
    """Send `sig` once fold `fold` ended an epoch in this run (checkpoint saved, metrics logged),
    so that the process is inside the next epoch; return its exit code."""
    before = epochs_logged(root, fold)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended by itself:\n{last_log(root)}"
        if epochs_logged(root, fold) > before:
            proc.send_signal(sig)
            return proc.wait(timeout=300)
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"fold {fold} ended no epoch within 10 minutes")


def last_log(root: Path) -> str:
    return sorted(root.glob("run*.log"))[-1].read_text()


def runs(root: Path) -> tuple[list, list]:
    """(cell runs, fold runs sorted by fold) of the experiment."""
    client = sqlite_client(root)
    experiment = client.get_experiment_by_name("fus2net")
    found = client.search_runs([experiment.experiment_id], max_results=100)
    cells = [r for r in found if r.data.tags.get("fus2net.role") == "cell"]
    folds = [r for r in found if r.data.tags.get("fus2net.role") == "fold"]
    return cells, sorted(folds, key=lambda r: (r.data.tags["fus2net.fold"], r.info.start_time))


def fake_run(status: str = "RUNNING", run_id: str = "r1", **tags: str) -> SimpleNamespace:
    info = SimpleNamespace(status=status, run_id=run_id, run_name="fold-0", start_time=0)
    return SimpleNamespace(info=info, data=SimpleNamespace(tags=tags))


def owned_by(pid: int, host: str | None = None, **extra: str) -> dict[str, str]:
    start = resume.process_start_time(pid) or ""
    return {
        schema.HOST: host or socket.gethostname(),
        schema.PID: str(pid),
        schema.PID_START: start,
        **extra,
    }


def test_a_run_whose_process_is_gone_is_an_orphan() -> None:
    with subprocess.Popen(["sleep", "60"]) as alive:
        assert not resume.is_orphan(fake_run(**owned_by(alive.pid)))
        reused = {**owned_by(alive.pid), schema.PID_START: "1"}  # same pid, other process
        assert resume.is_orphan(fake_run(**reused))
        alive.kill()
    assert resume.is_orphan(fake_run(**owned_by(alive.pid)))
    assert not resume.is_orphan(fake_run("KILLED", **owned_by(alive.pid)))
    me = fake_run(**owned_by(os.getpid()))
    assert resume.is_orphan(me), "this process, but not working on it: left over"
    with resume.working_on(me.info.run_id):
        assert not resume.is_orphan(me)


def test_a_run_of_another_host_is_an_orphan_when_its_heartbeat_stops() -> None:
    now = time.time()
    beat = {schema.HOST: "node-17", schema.PID: "1234"}
    fresh = fake_run(**beat, **{schema.HEARTBEAT: str(int(now - 60))})
    stale = fake_run(**beat, **{schema.HEARTBEAT: str(int(now - 1000))})
    assert not resume.is_orphan(fresh, stale_after_s=900, now=now)
    assert resume.is_orphan(stale, stale_after_s=900, now=now)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def test_jobs_creating_one_cell_at_once_keep_one_run(store: str) -> None:
    tracker = MlflowTracker(store, "claims")
    tags = {schema.ROLE: "cell", schema.CELL_KEY: "k1"}
    first = resume.claim_cell(tracker, "k1", "cell", tags, {"lr": 0.1})
    second = resume.claim_cell(tracker, "k1", "cell", tags, {"lr": 0.1})
    assert second == first
    assert [r.info.run_id for r in resume.find_cells(tracker, "k1")] == [first]


def complete_cell(
    tracker: MlflowTracker,
    summary: CellSummary,
    monkeypatch: pytest.MonkeyPatch,
    scored: list[list[int]] | None = None,
) -> None:
    """`job.complete_cell` of a 2-fold cell, with loading a fold and scoring stood in for."""
    ctx = SimpleNamespace(tracker=tracker, stale_after_s=900, n_folds=2, tags={}, params={})
    monkeypatch.setattr(
        job, "load_fold_result", lambda ctx, run: (schema.FoldRun(run).fold, {"val": {}})
    )
    monkeypatch.setattr(
        job,
        "score_cell",
        lambda ctx, summary, results: (scored if scored is not None else []).append(list(results)),
    )
    clinical = SimpleNamespace(evaluate=lambda *args: None)
    job.complete_cell(ctx, summary, {}, clinical)  # type: ignore[arg-type]


def test_the_last_fold_to_finish_scores_the_cell(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = MlflowTracker(store, "finish")
    cell = tracker.start_run("cell", {schema.ROLE: "cell"})
    summary = CellSummary(cell, "k2")
    scored: list[list[int]] = []

    def fold_run(fold: int, status: str) -> None:
        tags = {schema.ROLE: "fold", schema.FOLD: str(fold)}
        tracker.end_run(tracker.start_run(f"fold-{fold}", tags, parent_id=cell), status)

    def finish() -> None:
        complete_cell(tracker, summary, monkeypatch, scored)

    fold_run(0, "FINISHED")
    finish()
    assert summary.status == "SCHEDULED" and tracker.get_run(cell).info.status == "SCHEDULED"
    assert not scored
    fold_run(1, "FINISHED")
    finish()
    assert scored == [[0, 1]] and tracker.get_run(cell).info.status == "FINISHED"
    assert tracker.get_run(cell).data.tags["fus2net.folds_run"] == "0,1"


def test_a_failed_fold_fails_the_cell_with_its_reason(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = MlflowTracker(store, "failed")
    cell = tracker.start_run("cell", {schema.ROLE: "cell"})
    fold = tracker.start_run("fold-0", {schema.ROLE: "fold", schema.FOLD: "0"}, cell)
    tracker.set_tags(fold, {schema.ERROR: "FloatingPointError: train loss is nan"})
    tracker.end_run(fold, "FAILED")
    summary = CellSummary(cell, "k3")
    complete_cell(tracker, summary, monkeypatch)
    run = tracker.get_run(cell)
    assert run.info.status == "FAILED" == summary.status
    reason = run.data.tags["fus2net.error"]
    assert "fold 1/2 FAILED: FloatingPointError: train loss is nan" in reason


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['FUS2NET_MARKER']}",))


def test_a_tampered_checkpoint_is_refused_without_running_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("FUS2NET_MARKER", str(marker))
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "hparams": _Payload()}, checkpoint)  # Lightning's file format
    assert not _loadable(checkpoint), "weights_only refuses it: the fold starts over"
    assert not marker.exists(), "no pickled code ran"
    keys = ("optimizer_states", "lr_schedulers", "loops", "global_step")
    lightning = {"state_dict": {"w": torch.zeros(2)}, "epoch": 3, **{key: [] for key in keys}}
    torch.save({**lightning, "pytorch-lightning_version": "2.5"}, checkpoint)
    assert _loadable(checkpoint)


@pytest.mark.slow
def test_killed_runs_are_marked_and_the_same_command_resumes(tmp_path: Path) -> None:
    # 1. SIGTERM in fold 0's second epoch: both runs KILLED, with the reason, exit 128 + 15.
    code = stop_in_next_epoch(start(tmp_path), tmp_path, 0, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, last_log(tmp_path)
    cells, folds = runs(tmp_path)
    assert [c.info.status for c in cells] == ["KILLED"]
    assert [(f.data.tags["fus2net.fold"], f.info.status) for f in folds] == [("0", "KILLED")]
    assert "SIGTERM" in folds[0].data.tags["fus2net.error"]
    assert "Traceback" not in last_log(tmp_path)

    # 2. The same command resumes fold 0 in its run, then SIGKILL in fold 1: nothing can mark
    #    the runs, they stay RUNNING until the next run.
    code = stop_in_next_epoch(start(tmp_path), tmp_path, 1, signal.SIGKILL)
    assert code == -signal.SIGKILL
    cells, folds = runs(tmp_path)
    assert [(f.data.tags["fus2net.fold"], f.info.status) for f in folds] == [
        ("0", "FINISHED"),
        ("1", "RUNNING"),
    ]
    assert int(folds[0].data.tags["fus2net.resumed_from_epoch"]) >= 1
    assert folds[0].data.tags["fus2net.attempts"] == "2"
    epochs = [
        m.step
        for m in sqlite_client(tmp_path).get_metric_history(folds[0].info.run_id, "loss/train")
    ]
    assert sorted(set(epochs)) == [0, 1, 2, 3, 4], "the resumed fold's curve has every epoch"
    assert checkpoint(tmp_path, 0) is None, "a finished fold's checkpoints are removed"

    # 3. The next run marks the orphaned fold KILLED and resumes it; SIGINT (Ctrl+C) stops it.
    code = stop_in_next_epoch(start(tmp_path), tmp_path, 1, signal.SIGINT)
    assert code == 128 + signal.SIGINT, last_log(tmp_path)
    assert "orphaned" in last_log(tmp_path)
    cells, folds = runs(tmp_path)
    assert cells[0].info.status == "KILLED" and folds[1].info.status == "KILLED"
    assert "SIGINT" in folds[1].data.tags["fus2net.error"]

    # 4. Run to the end: one cell, one run per fold, all FINISHED, nothing RUNNING.
    proc = start(tmp_path)
    assert proc.wait(timeout=600) == 0, last_log(tmp_path)
    cells, folds = runs(tmp_path)
    assert len(cells) == 1 and cells[0].info.status == "FINISHED"
    assert [(f.data.tags["fus2net.fold"], f.info.status) for f in folds] == [
        ("0", "FINISHED"),
        ("1", "FINISHED"),
    ]
    assert folds[1].data.tags["fus2net.attempts"] == "3"
    assert int(folds[1].data.tags["fus2net.resumed_from_epoch"]) == 2
    assert "fus2net.error" not in cells[0].data.tags
    assert cells[0].data.tags["fus2net.folds_run"] == "0,1"
    assert "test/auc" in cells[0].data.metrics and cells[0].data.metrics["cv/folds_completed"] == 2


def test_signal_handlers_that_others_installed_are_left_to_them() -> None:
    """submitit ignores SIGTERM on purpose under SLURM (its USR2 handler requeues); an ignored
    SIGINT, as a background job has, is still taken over."""
    from fus2net.experiment.interrupts import JobInterrupted, stop_on_signals

    calls = []
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        signal.signal(signal.SIGTERM, lambda *_: calls.append("theirs"))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with pytest.raises(JobInterrupted, match="SIGINT"), stop_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        assert calls == ["theirs"] and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
