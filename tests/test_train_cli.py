"""End to end through the real entry point: Hydra multirun, Lightning folds, MLflow SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs import BUSI, TINY, run_train, sqlite_client


@pytest.fixture(scope="module")
def optimizer_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    run_train(["-m", "optimizer=adam,rmsprop,sgd", *TINY], cwd=root)
    return root


def test_sweep_leaves_three_cells_with_two_folds_each(optimizer_sweep: Path) -> None:
    client = sqlite_client(optimizer_sweep)
    exp = client.get_experiment_by_name("fus2net")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    cells = [r for r in runs if r.data.tags.get("fus2net.role") == "cell"]
    folds = [r for r in runs if r.data.tags.get("fus2net.role") == "fold"]
    assert len(cells) == 3 and len(folds) == 6
    assert {r.data.tags["choice.optimizer"] for r in cells} == {"adam", "rmsprop", "sgd"}
    assert len({r.data.tags["sweep"] for r in runs}) == 1, "one sweep tag shared by every job"
    assert len({r.data.tags["fus2net.cell_key"] for r in cells}) == 3
    for cell in cells:
        assert cell.info.status == "FINISHED"
        children = [f for f in folds if f.data.tags["mlflow.parentRunId"] == cell.info.run_id]
        assert sorted(f.data.tags["fus2net.fold"] for f in children) == ["0", "1"]
        assert cell.data.params["optimizer._target_"].startswith("torch.optim.")
        assert cell.data.params["data.image_size"] == "80"
        assert len(cell.data.params["dataset.fingerprint"]) == 64
        assert cell.data.tags["mlflow.source.git.commit"]
        for name in ("accuracy", "sensitivity", "specificity", "precision", "auc"):
            assert f"cv/{name}_mean" in cell.data.metrics and f"cv/{name}_std" in cell.data.metrics
            assert 0.0 <= cell.data.metrics[f"test/{name}"] <= 1.0
        artifacts = {a.path for a in client.list_artifacts(cell.info.run_id)}
        assert {"predictions.csv", "roc.png", "results.json", "provenance"} <= artifacts
        provenance = {a.path for a in client.list_artifacts(cell.info.run_id, "provenance")}
        assert {
            "provenance/config.yaml",
            "provenance/environment.json",
            "provenance/dataset.json",
        } <= provenance
        assert "provenance/split.json" in provenance
        split = json.loads(
            Path(client.download_artifacts(cell.info.run_id, "provenance/split.json")).read_text()
        )
        assert len(split["folds"]) == 2 and len(split["test"]) == 18


def test_fold_runs_have_epoch_metrics_predictions_and_checkpoint(optimizer_sweep: Path) -> None:
    client = sqlite_client(optimizer_sweep)
    exp = client.get_experiment_by_name("fus2net")
    folds = client.search_runs([exp.experiment_id], "tags.`fus2net.role` = 'fold'")
    fold = folds[0]
    for key in ("loss/train", "loss/val", "auc/train", "auc/val", "sensitivity/val", "lr"):
        history = client.get_metric_history(fold.info.run_id, key)
        assert [m.step for m in history] == [0], key
    assert "fold/val_auc" in fold.data.metrics and "fold/test_accuracy" in fold.data.metrics
    files = {a.path for a in client.list_artifacts(fold.info.run_id)}
    assert {"predictions.csv", "roc.png", "confusion_val.png", "checkpoint"} <= files
    local = Path(client.download_artifacts(fold.info.run_id, "predictions.csv"))
    header = local.read_text().splitlines()[0]
    assert header == "path,label,prob,fold,split"
    weights = client.download_artifacts(fold.info.run_id, "checkpoint/model.pt")
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
    assert any(k.endswith("weight") for k in state)


def test_cell_results_match_logged_predictions(optimizer_sweep: Path) -> None:
    import pandas as pd

    from fus2net.evaluation.metrics import binary_metrics

    client = sqlite_client(optimizer_sweep)
    exp = client.get_experiment_by_name("fus2net")
    cell = client.search_runs([exp.experiment_id], "tags.`fus2net.role` = 'cell'")[0]
    preds = pd.read_csv(client.download_artifacts(cell.info.run_id, "predictions.csv"))
    test = preds[preds.split == "test"]
    expected = binary_metrics(test.label.to_numpy(), test.prob.to_numpy())
    assert cell.data.metrics["test/accuracy"] == pytest.approx(expected["accuracy"])
    results = json.loads(
        Path(client.download_artifacts(cell.info.run_id, "results.json")).read_text()
    )
    assert set(results["folds"]) == {"0", "1"}
    oof = preds[preds.split == "oof"]
    assert oof.path.is_unique and not set(oof.path) & set(test.path), "OOF and test disjoint"


def test_invalid_config_fails_before_training(tmp_path: Path) -> None:
    proc = run_train(["cv.folds=1", "data.channels=2", *TINY[:2]], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "cv.folds=1" in out and "data.channels=2" in out
    assert "Traceback" not in out


def test_missing_dataset_root_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_train(
        ["dataset=busi", f"dataset.root={tmp_path / 'nowhere'}"], cwd=tmp_path, check=False
    )
    assert proc.returncode == 2
    assert "nowhere" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.busi
@pytest.mark.skipif(not BUSI.is_dir(), reason="real BUSI data not beside the checkout")
def test_busi_smoke(tmp_path: Path) -> None:
    """A small real-data run: BUSI through the same loader, 2 folds x 1 epoch at 80 px."""
    proc = run_train(
        [
            "dataset=busi",
            f"dataset.root={BUSI}",
            "data.image_size=80",
            "data.batch_size=32",
            "cv.folds=2",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=4",
            "trainer.enable_progress_bar=false",
            "data.test.fraction=0.1",
        ],
        cwd=tmp_path,
    )
    assert "test" in proc.stdout
    client = sqlite_client(tmp_path)
    exp = client.get_experiment_by_name("fus2net")
    cell = client.search_runs([exp.experiment_id], "tags.`fus2net.role` = 'cell'")[0]
    assert cell.data.params["dataset.n_images"] == "647"
    assert cell.info.status == "FINISHED"
