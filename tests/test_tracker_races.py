"""Two jobs writing the same thing into one store at the same moment (a parallel sweep), and a
job opening a store that another MLflow client is creating."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fus2net.tracking import schema
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.tracking.uris import TrackingError
from jobs import run_train, tiny, train_env


def _image_set(tmp_path: Path) -> schema.ImageSet:
    return schema.image_set(
        "synthetic", "f" * 64, schema.Context.TEST, ["a.png", "b.png"], [0, 1],
        ["benign", "malignant"], str(tmp_path),
    )  # fmt: skip


def test_a_dataset_another_job_inserted_first_is_linked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "races")
    run_id = tracker.start_run("cell", {})
    real, calls = tracker.client.log_inputs, []

    def first_loses_the_race(run: str, datasets: list) -> None:
        calls.append(run)
        if len(calls) == 1:  # what PostgreSQL answered in CI when two jobs logged one test set
            raise RuntimeError(
                "BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value violates "
                'unique constraint "dataset_pk"'
            )
        real(run, datasets=datasets)

    monkeypatch.setattr(tracker.client, "log_inputs", first_loses_the_race)
    tracker.log_datasets(run_id, [_image_set(tmp_path)])
    assert len(calls) == 2
    inputs = tracker.get_run(run_id).inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["synthetic/test"]


def test_any_other_store_error_stops_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "races")
    run_id = tracker.start_run("cell", {})

    def broken(run: str, datasets: list) -> None:
        raise RuntimeError("disk I/O error")

    monkeypatch.setattr(tracker.client, "log_inputs", broken)
    with pytest.raises(TrackingError, match="disk I/O error"):
        tracker.log_datasets(run_id, [_image_set(tmp_path)])


# Three jobs open one fresh local store at the same instant (a start time they all wait for):
# without the store's lock, MLflow migrates the new database in each and all but one die in
# alembic ("table experiments already exists", "duplicate column name: step"); measured 10 of
# 12 processes failing in 4 such trials before the lock.
_OPEN_AT = """
import sys, time
from fus2net.tracking.mlflow_tracker import MlflowTracker
uri, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
print(MlflowTracker(uri, "fresh").experiment_id)
"""


@pytest.mark.parametrize("trial", range(2))
def test_jobs_opening_a_fresh_store_at_once_all_succeed(tmp_path: Path, trial: int) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    start = str(time.time() + 8)  # after every interpreter has imported MLflow
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_AT, uri, start],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [job.communicate(timeout=300) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0, 0], [err[-800:] for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1  # one experiment, shared


# Another MLflow client (an `mlflow ui`, a script polling the store) creates a fresh store while
# a job opens it: MLflow migrates in both and the job died in the half-made schema
# ("AttributeError: dimension_attributes", "table evaluation_datasets already exists", "No such
# constraint", "Circular dependency": 4 of 4 trials before the job waited for it).
_MLFLOW_CLIENT_AT = """
import sys, time
from mlflow.tracking import MlflowClient
uri, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
MlflowClient(tracking_uri=uri).search_experiments()
"""
_JOB_AT = """
import sys, time
from fus2net.tracking.mlflow_tracker import MlflowTracker
uri, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
print(MlflowTracker(uri, "fresh").experiment_id)
"""


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("late_s", [0.0, 1.0])
def test_a_job_waits_for_another_mlflow_client_creating_the_store(
    tmp_path: Path, late_s: float
) -> None:
    from mlflow.store.db.utils import _get_latest_schema_revision

    database = tmp_path / "mlruns" / "mlflow.db"
    database.parent.mkdir()
    uri, start = f"sqlite:///{database}", time.time() + 8
    other = _python(_MLFLOW_CLIENT_AT, uri, str(start))
    job = _python(_JOB_AT, uri, str(start + late_s))  # while MLflow migrates the new file
    (out, err), (_, other_err) = job.communicate(timeout=300), other.communicate(timeout=300)
    assert job.returncode == 0, err[-1500:]
    assert out.strip() and "Traceback" not in err
    assert other.returncode == 0, other_err[-1500:]  # and the job did not break the other
    with sqlite3.connect(database) as con:
        (revision,) = con.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision == _get_latest_schema_revision()


# Another process holds the file's exclusive lock while it writes a schema (then gives it up).
_HOLD = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")
con.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY)")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("ROLLBACK")
"""


def _hold(database: Path, seconds: float) -> subprocess.Popen[str]:
    database.parent.mkdir(parents=True, exist_ok=True)
    holder = _python(_HOLD, str(database), str(seconds))
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_store_locked_by_another_client_is_opened_once_it_lets_go(tmp_path: Path) -> None:
    database = tmp_path / "mlruns" / "mlflow.db"
    holder = _hold(database, 4)
    started = time.monotonic()
    tracker = MlflowTracker(f"sqlite:///{database}", "fresh", wait_s=60)
    assert time.monotonic() - started > 2  # it waited rather than migrate a locked file
    assert holder.wait(timeout=60) == 0
    assert tracker.client.get_experiment(tracker.experiment_id).name == "fresh"


def test_a_store_that_is_no_database_fails_at_once(tmp_path: Path) -> None:
    database = tmp_path / "mlflow.db"
    database.write_text("not a database\n" * 100)
    started = time.monotonic()
    with pytest.raises(TrackingError, match="file is not a database"):
        MlflowTracker(f"sqlite:///{database}", "x", wait_s=60)
    assert time.monotonic() - started < 20  # no waiting for a client that is not there


def test_a_store_held_past_the_bound_stops_the_job_with_a_plain_message(tmp_path: Path) -> None:
    database = tmp_path / "mlruns" / "mlflow.db"
    holder = _hold(database, 600)
    try:
        env = train_env(tmp_path, FUS2NET_STORE_WAIT_S="3")
        job = run_train(tiny(), tmp_path, env=env, check=False)
    finally:
        holder.kill()
        holder.wait()
    output = job.stdout + job.stderr
    assert job.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    assert f"the tracking store {database} was still not ready after 3 s" in output
    assert "another process holds the database locked" in output
    assert "Another MLflow client" in output and "run the same command again" in output


def test_an_old_schema_no_client_moves_gets_mlflows_advice_without_the_full_wait(
    tmp_path: Path,
) -> None:
    database = tmp_path / "mlflow.db"
    MlflowTracker(f"sqlite:///{database}", "x")
    with sqlite3.connect(database) as con:  # left at an older revision, every table there
        con.execute("UPDATE alembic_version SET version_num = '7f2a7d5fae7d'")
    code = (
        "import sys\n"
        "from fus2net.tracking.mlflow_tracker import MlflowTracker\n"
        "MlflowTracker(sys.argv[1], 'x', wait_s=120)\n"
    )
    started = time.monotonic()
    job = _python(code, f"sqlite:///{database}")  # a process of its own: MLflow caches stores
    _, err = job.communicate(timeout=300)
    assert job.returncode != 0 and "mlflow db upgrade" in err, err[-1500:]
    assert time.monotonic() - started < 60  # settled after store_open.SETTLED_S, not 120 s
