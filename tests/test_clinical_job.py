"""The clinical step end to end: a tiny training job, then prediction by run id and registry."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fus2net.cell.job_data import load_external
from fus2net.clinical.external import evaluate_external, patient_level
from fus2net.clinical.step import evaluate_clinically
from fus2net.evaluation.localization import localization_scores
from fus2net.images.imageio import resized_mask
from fus2net.inference import load_model, load_package, predict_files
from jobs import BUSI, compose_train, run_train, sqlite_client, store_uri, tiny

# test_train_cli's tiny settings, at 64 px (Fus2Net's smallest input is 51 px).
TINY = tiny("dataset.image_size=96", "data.image_size=64")
EXTERNAL = [
    "+dataset@eval_datasets.ext=synthetic",
    "eval_datasets.ext.n_images=12",
    "eval_datasets.ext.seed=5",
    "eval_datasets.ext.root=${paths.data_dir}/synthetic_ext",
]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clinical")
    args = [*TINY, *EXTERNAL, "evaluation.gradcam.n_images=8", "evaluation.register_model=true"]
    run_train(args, cwd=root, timeout=600)
    return root


def job_folder(root: Path) -> Path:
    """The one job output folder (it holds fus2net_model.json beside fold_<k>/model.pt)."""
    (spec,) = (root / "outputs").glob("*/*/fus2net_model.json")
    return spec.parent


def cell_and_folds(root: Path):
    client = sqlite_client(root)
    runs = client.search_runs([client.get_experiment_by_name("fus2net").experiment_id])
    cell = next(r for r in runs if r.data.tags["fus2net.role"] == "cell")
    return client, cell, [r for r in runs if r.data.tags["fus2net.role"] == "fold"]


def test_cell_run_has_calibration_operating_localization_external(job: Path) -> None:
    client, cell, folds = cell_and_folds(job)
    metrics = cell.data.metrics
    for name in (
        "calibration/test_ece",
        "calibration/test_ece_calibrated",
        "calibration/test_mean_prob_calibrated",
        "calibration/oof_ece",
        "operating/sens95_test_sensitivity",
        "operating/youden_test_specificity",
        "localization/cam_energy_in_mask",
        "localization/pointing_game",
        "localization/mask_area_fraction",
        "external/ext/auc",
        "external/ext/ece",
    ):
        assert 0.0 <= metrics[name] <= 1.0, name
    assert 0.05 <= metrics["calibration/temperature"] <= 20.0
    assert -10.0 <= metrics["calibration/bias"] <= 10.0  # Platt scaling, the default
    assert metrics["calibration/test_nll"] > 0 and 0 < metrics["calibration/test_prevalence"] < 1
    assert 0 <= metrics["operating/sens95_threshold"] <= 1
    assert metrics["operating/sens95_oof_sensitivity"] >= 0.95
    assert metrics["localization/n_images"] == 8 and metrics["external/ext/n_images"] == 12
    assert len(folds) == 2 and all("calibration/val_ece" in f.data.metrics for f in folds)
    fold_files = {a.path for a in client.list_artifacts(folds[0].info.run_id, "calibration")}
    assert fold_files == {"calibration/reliability_val.png"}
    artifacts = {
        a.path
        for folder in (None, "calibration", "localization", "model", "external/ext")
        for a in client.list_artifacts(cell.info.run_id, folder)
    }
    assert {
        "model_card.md",
        "clinical.json",
        "calibration/reliability.png",
        "localization/gradcam_grid.png",
        "localization/scores.csv",
        "model/fus2net_model.json",
        "external/ext/predictions.csv",
    } <= artifacts
    card = Path(client.download_artifacts(cell.info.run_id, "model_card.md", str(job)))
    text = card.read_text()
    assert "Not a medical device" in text and "| ext | 12 |" in text
    assert "(platt, p' = sigmoid(logit(p) / T + b))" in text
    assert cell.data.tags["fus2net.registered_model"] == "models:/fus2net-synthetic/1"


def test_prediction_by_run_id_and_registry_reproduces_the_test_scores(
    job: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, cell, folds = cell_and_folds(job)
    preds = pd.read_csv(
        client.download_artifacts(cell.info.run_id, "predictions.csv", str(tmp_path))
    )
    test = preds[preds.split == "test"].head(3)
    uri = store_uri(job)
    by_run = load_model(f"runs:/{cell.info.run_id}", tracking_uri=uri)
    assert len(by_run.members) == 2 and by_run.spec.thresholds["sens95"] == pytest.approx(
        cell.data.metrics["operating/sens95_threshold"]
    )
    frame = predict_files(by_run, list(test.path), tmp_path / "run", gradcam=False)
    # training predicted under bf16 autocast (trainer=cpu), prediction runs in float32
    assert frame.prob_malignant.to_numpy() == pytest.approx(test.prob.to_numpy(), abs=2e-3)
    registered = load_model("models:/fus2net-synthetic/1", tracking_uri=uri)
    images = np.zeros((2, 64, 64, 3), np.uint8)
    assert registered.probabilities(images) == pytest.approx(by_run.probabilities(images))
    one_fold = load_model(folds[0].info.run_id, tracking_uri=uri)
    assert len(one_fold.members) == 1

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # set_tracking_uri would leak to later tests
    pyfunc = mlflow.pyfunc.load_model("models:/fus2net-synthetic/1")
    grey = io.BytesIO()
    Image.new("RGB", (70, 50), (90, 90, 90)).save(grey, format="PNG")
    out = pyfunc.predict(pd.DataFrame({"image": [grey.getvalue()]}))  # image file bytes
    assert out.loc[0, "predicted_class"] in ("benign", "malignant")


def test_job_output_folder_is_a_model(job: Path) -> None:
    model = load_package(job_folder(job))
    assert [m.fold for m in model.spec.members] == [0, 1] and model.cam_layers == ["block2"] * 2


def test_disabled_evaluation_logs_nothing(tmp_path: Path) -> None:
    ctx = SimpleNamespace(cfg=compose_train("evaluation.enabled=false"), out=tmp_path)
    summary = SimpleNamespace(cell_run_id="run")
    report = evaluate_clinically(ctx, summary, {}, None)  # type: ignore[arg-type]
    assert report.metrics == {} and report.spec_file is None


def test_external_dataset_with_other_classes_is_refused(job: Path, tmp_path: Path) -> None:
    model = load_package(job_folder(job))
    dataset = {
        "_target_": "fus2net.data.sources.FolderSource",
        "root": str(job / "data" / "synthetic"),
        "classes": ["malignant", "benign"],
    }
    with pytest.raises(ValueError, match="differ from the model's"):
        evaluate_external(load_external("swapped", dataset), model, [], tmp_path)


def test_patient_level_takes_mean_probability_and_worst_label() -> None:
    frame = pd.DataFrame(
        {"label": [0, 1, 0, 0], "prob": [0.2, 0.8, 0.1, 0.3], "group": ["a", "a", "b", None]}
    )
    patients = patient_level(frame)
    assert patients.to_dict("list") == {"group": ["a", "b"], "label": [1, 0], "prob": [0.5, 0.1]}


@pytest.mark.busi
@pytest.mark.skipif(not BUSI.is_dir(), reason="needs ../shared/data/busi beside the checkout")
def test_busi_smoke_prediction_and_localization(job: Path, tmp_path: Path) -> None:
    """Real BUSI files (RGB PNGs with several masks) through prediction and the mask score."""
    from fus2net.data.sources import BusiSource

    records = BusiSource(root=BUSI, classes=["benign", "malignant"]).load()
    picked = [records[-1], next(r for r in records if len(r.masks) > 1)]  # malignant, benign
    model = load_package(job_folder(job))
    frame = predict_files(model, [r.image for r in picked], tmp_path)
    assert (frame.error == "").all() and frame.prob_malignant.between(0, 1).all()
    size = model.spec.image_size
    from fus2net.data.cache import load_resized

    images = np.stack([load_resized(r.image, size, 3) for r in picked])
    masks = [resized_mask(r.masks, size) for r in picked]
    scores = localization_scores(model.grad_cams(images), masks)
    assert scores["n_images"] == 2 and 0.0 <= scores["cam_energy_in_mask"] <= 1.0
    assert 0.0 < scores["mask_area_fraction"] < 1.0
