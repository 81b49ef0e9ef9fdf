"""Integration with a real MLflow tracking server on PostgreSQL (started by .ci/run).

A parallel sweep (Hydra's joblib launcher, 2 jobs at a time) of 3 cells whose folds run as
separate jobs must land every run, fold, metric and artifact in the server, leave nothing
RUNNING, and never log the credentials of the tracking URI. Two machines' worth of Optuna
searches share one study in PostgreSQL. Skipped without FUS2NET_TEST_MLFLOW_URI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from jobs import start_train, tiny, train_env

SERVER = os.environ.get("FUS2NET_TEST_MLFLOW_URI", "")
OPTUNA_STORAGE = os.environ.get("FUS2NET_TEST_OPTUNA_STORAGE", "")
SECRET = "s3cret-token"  # the test server ignores it; it must never be logged or printed
TINY = tiny("trainer.threads=1", "evaluation.enabled=false")

pytestmark = pytest.mark.skipif(
    not SERVER, reason="needs FUS2NET_TEST_MLFLOW_URI: a test MLflow server (.ci/run starts one)"
)


def train(args: list[str], root: Path, **env: str) -> subprocess.Popen:
    tracking = SERVER.replace("://", f"://ci:{SECRET}@", 1)
    return start_train(
        [*args, "tracking=server", *TINY],
        root,
        env=train_env(root, MLFLOW_TRACKING_URI=tracking, **env),
    )


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    assert SECRET not in out
    return out


def experiment_runs(name: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=SERVER)
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], max_results=1000)


def test_parallel_sweep_lands_every_run_in_the_server(tmp_path: Path) -> None:
    import torch
    from mlflow.tracking import MlflowClient

    experiment = f"ci-parallel-{uuid.uuid4().hex[:8]}"
    out = finish(
        train(
            [
                "-m",
                "hydra/launcher=parallel",
                f"tracking.experiment={experiment}",
                "optimizer=adam,rmsprop,sgd",
                "cv.fold=0,1",
            ],
            tmp_path,
        )
    )
    assert "n_jobs=2" in out and "is launching 6 jobs" in out
    client = MlflowClient(tracking_uri=SERVER)
    runs = experiment_runs(experiment)
    assert not [r.info.run_id for r in runs if r.info.status != "FINISHED"], "all FINISHED"
    cells = [r for r in runs if r.data.tags["fus2net.role"] == "cell"]
    folds = [r for r in runs if r.data.tags["fus2net.role"] == "fold"]
    assert len(cells) == 3 and len(folds) == 6, "one cell run per cell, one run per fold"
    assert {c.data.tags["choice.optimizer"] for c in cells} == {"adam", "rmsprop", "sgd"}
    for cell in cells:
        children = [f for f in folds if f.data.tags["mlflow.parentRunId"] == cell.info.run_id]
        assert sorted(f.data.tags["fus2net.fold"] for f in children) == ["0", "1"]
        assert cell.data.tags["fus2net.folds_run"] == "0,1"
        assert cell.data.metrics["cv/folds_completed"] == 2
        for name in ("accuracy", "sensitivity", "specificity", "precision", "auc"):
            assert f"cv/{name}_mean" in cell.data.metrics and f"test/{name}" in cell.data.metrics
        assert cell.info.artifact_uri.startswith("mlflow-artifacts:"), "served by the server"
        files = {a.path for a in client.list_artifacts(cell.info.run_id)}
        assert {"predictions.csv", "results.json", "roc.png", "provenance"} <= files
        config = client.download_artifacts(cell.info.run_id, "provenance/config.yaml", tmp_path)
        assert SECRET not in Path(config).read_text()
        for fold in children:
            history = client.get_metric_history(fold.info.run_id, "loss/train")
            assert [m.step for m in history] == [0]
            assert "fold/test_auc" in fold.data.metrics
            dst = tmp_path / fold.info.run_id
            weights = client.download_artifacts(fold.info.run_id, "checkpoint/model.pt", dst)
            assert torch.load(weights, map_location="cpu", weights_only=True)
    for run in runs:
        logged = [*run.data.params.values(), *run.data.tags.values()]
        assert not [v for v in logged if SECRET in v], "credentials never logged"


@pytest.mark.filterwarnings("ignore:.*Distribution has been deprecated:FutureWarning")
@pytest.mark.skipif(not OPTUNA_STORAGE, reason="needs FUS2NET_TEST_OPTUNA_STORAGE")
def test_two_machines_share_one_optuna_study_in_postgresql(tmp_path: Path) -> None:
    import optuna

    study = f"ci-study-{uuid.uuid4().hex[:8]}"
    experiment = f"ci-optuna-{uuid.uuid4().hex[:8]}"
    args = [
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=1",
        f"hydra.sweeper.study_name={study}",
        f"tracking.experiment={experiment}",
    ]
    # Once per study, as the README says: concurrent first writers would race creating tables.
    subprocess.run(
        [
            str(Path(sys.executable).parent / "optuna"),
            "create-study",
            f"--storage={OPTUNA_STORAGE}",
            f"--study-name={study}",
            "--direction=maximize",
            "--skip-if-exists",
        ],
        check=True,
        capture_output=True,
    )
    machines = []
    for name in ("a", "b"):  # two "machines": separate roots, one study, one tracking server
        (tmp_path / name).mkdir()
        machines.append(train(args, tmp_path / name, FUS2NET_OPTUNA_STORAGE=OPTUNA_STORAGE))
    for proc in machines:
        finish(proc)
    trials = optuna.load_study(study_name=study, storage=OPTUNA_STORAGE).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    cells = [r for r in experiment_runs(experiment) if r.data.tags["fus2net.role"] == "cell"]
    assert sorted(c.data.metrics["cv/auc_mean"] for c in cells) == pytest.approx(
        sorted(t.value for t in trials)
    )
