"""Two jobs writing the same thing into one store at the same moment (a parallel sweep)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fus2net.tracking import schema
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.tracking.uris import TrackingError


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
